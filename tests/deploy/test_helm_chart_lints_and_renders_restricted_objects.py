"""helm/pulsestream: linted and really rendered by the Helm v4 library, then held to the same checks as k8s/.

The render is a real ``helm install`` (helm-sdkpy, ``HELM_DRIVER=memory``)
into kmock's Kubernetes API emulator; the objects Helm created are read back
from the emulator and validated. kmock 0.8 serves the core group's discovery
as ``groupVersion: "/v1"``, which Helm's REST mapper cannot use; the
:class:`HelmReadyEmulator` below fixes just that.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kmock as kmocklib
import pytest
import restricted
import yaml
from deploy_support import CHART, CRD_NAME, K8S, ROOT, missing_tool

from pulsestream.spec import parse_spec

HERE = Path(__file__).parent
ALL_ON = yaml.safe_load((HERE / "values-all-on.yaml").read_text())
NAMESPACE = "pulsestream"
SEVERITY_ERROR = 3


class HelmReadyEmulator(kmocklib.KubernetesEmulator):
    """kmock's emulator with core discovery answering ``groupVersion: "v1"`` as a real API server does."""

    async def _serve_version(self, request: Any) -> Any:
        payload = await super()._serve_version(request)
        if request.resource is not None and request.resource.group == "":
            payload["groupVersion"] = request.resource.version
        return payload


@pytest.fixture(scope="module")
def helm_available() -> None:
    if importlib.util.find_spec("helm_sdkpy") is None:
        missing_tool("helm-sdkpy (the Helm library; `make dev` installs it)")


def helm_env(tmp_path: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, HELM_DRIVER="memory")
    for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[name] = str(tmp_path / name.lower())
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


async def helm(tmp_path: Path, *args: str, kubeconfig: Path | None = None) -> tuple[int, dict[str, Any]]:
    """Run tests/deploy/helmchart.py in its own process; the event loop keeps serving kmock meanwhile."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "helmchart.py"),
        *args,
        env=helm_env(tmp_path, kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode is not None
    assert stdout.strip(), stderr.decode()[-2000:]
    return process.returncode, json.loads(stdout)


def chart_with_values(tmp_path: Path, values: dict[str, Any]) -> Path:
    """A copy of the chart whose values.yaml is ``values`` (Helm's lint reads only the chart's own file)."""
    chart = tmp_path / "pulsestream"
    shutil.copytree(CHART, chart)
    (chart / "values.yaml").write_text(yaml.safe_dump(values))
    return chart


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def default_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def lint_errors(result: dict[str, Any]) -> list[str]:
    return [m["Path"] for m in result.get("Messages") or [] if m["Severity"] >= SEVERITY_ERROR]


async def install(kmock: Any, tmp_path: Path, values: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """``helm install pulsestream CHART -n pulsestream`` with ``values`` into the emulator."""
    kmock.resources.load_bundled()
    verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
    kmock.resources["pulsestream.io/v1alpha1/streamconfigs"] = kmock.ResourceInfo(
        kind="StreamConfig", namespaced=True, verbs=verbs, subresources={"status"}
    )
    kmock.resources["monitoring.coreos.com/v1/servicemonitors"] = kmock.ResourceInfo(
        kind="ServiceMonitor", namespaced=True, verbs=verbs
    )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url)}}],
                "users": [{"name": "test", "user": {"token": "unused"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
                "current-context": "kmock",
            }
        )
    )
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    return await helm(
        tmp_path, "install", str(CHART), "pulsestream", NAMESPACE, str(values_file), kubeconfig=kubeconfig
    )


def created_objects(kmock: Any) -> list[dict[str, Any]]:
    """What Helm created in the emulator, as plain dicts with apiVersion and kind."""
    objects = []
    for key in list(kmock.objects):
        resource = key[0]
        obj = dict(kmock.objects[key].raw)
        kind = kmock.resources[resource].kind
        obj.setdefault("apiVersion", f"{resource.group}/{resource.version}".lstrip("/"))
        obj.setdefault("kind", kind)
        objects.append(obj)
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


# --- lint --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("helm_available")
async def test_helm_lint_passes_with_the_default_values(tmp_path: Path) -> None:
    status, result = await helm(tmp_path, "lint", str(CHART))
    assert status == 0
    assert result["TotalChartsLinted"] == 1
    assert lint_errors(result) == []


@pytest.mark.usefixtures("helm_available")
async def test_helm_lint_passes_with_every_option_on(tmp_path: Path) -> None:
    chart = chart_with_values(tmp_path, merged(default_values(), ALL_ON))
    status, result = await helm(tmp_path, "lint", str(chart))
    assert status == 0
    assert lint_errors(result) == []


BAD_VALUES = {
    "zero replicas": {"generator": {"replicas": 0}},
    "unknown log level": {"logLevel": "loud"},
    "a typo'd key": {"streamer": {"replica": 3}},
    "a port out of range": {"streamer": {"port": 70000}},
    "no resource limits": {"streamer": {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}},
    "a frequency that is no duration": {"streamConfig": {"spec": {"frequency": "fast"}}},
    "a key a Bearer header cannot carry": {"streamer": {"apiKeys": {"keys": ["has space"]}}},
    "keys and an existing Secret": {"streamer": {"apiKeys": {"keys": ["k1"], "existingSecret": "mine"}}},
    "an ingress timeout below the heartbeat": {"ingress": {"enabled": True, "streamTimeoutSeconds": 10}},
}


@pytest.mark.usefixtures("helm_available")
@pytest.mark.parametrize("override", BAD_VALUES.values(), ids=BAD_VALUES.keys())
async def test_helm_lint_rejects_bad_values(tmp_path: Path, override: dict[str, Any]) -> None:
    values = merged(default_values(), override)
    if override == BAD_VALUES["no resource limits"]:
        values["streamer"]["resources"] = override["streamer"]["resources"]
    chart = chart_with_values(tmp_path, values)
    _, result = await helm(tmp_path, "lint", str(chart))
    assert "values.yaml" in lint_errors(result)


# --- a real render -----------------------------------------------------------------------------


@pytest.mark.usefixtures("helm_available")
@pytest.mark.kmock(cls=HelmReadyEmulator)
async def test_helm_install_with_bad_values_fails_naming_the_value(kmock: Any, tmp_path: Path) -> None:
    status, result = await install(kmock, tmp_path, {"generator": {"replicas": 0}, "logLevel": "loud"})
    assert status == 3
    assert "/generator/replicas" in result["error"]
    assert "/logLevel" in result["error"]
    assert not [key for key in kmock.objects if key[0].plural == "deployments"], "nothing is created"


@pytest.mark.usefixtures("helm_available")
@pytest.mark.kmock(cls=HelmReadyEmulator)
@pytest.mark.parametrize("values", [{}, ALL_ON], ids=["defaults", "all-options-on"])
async def test_helm_install_renders_valid_restricted_objects(
    kmock: Any, tmp_path: Path, values: dict[str, Any], streamconfig_schema: dict[str, Any]
) -> None:
    status, result = await install(kmock, tmp_path, values)
    assert status == 0, result.get("error")
    objects = created_objects(kmock)
    errors, unknown = restricted.schema_errors(objects)
    assert errors == []
    assert {where.split("/")[0] for where in unknown} <= {"StreamConfig", "ServiceMonitor"}

    workloads = restricted.workloads(objects)
    assert {w["metadata"]["name"].rsplit("-", 1)[1] for w in workloads} == {"generator", "streamer", "operator"}
    for check in (
        restricted.restricted_violations,
        restricted.drain_budget_problems,
        restricted.unknown_env,
        restricted.invalid_env,
    ):
        assert [problem for w in workloads for problem in check(w)] == []

    # The release's StreamConfig is valid for the CRD and the services, and drives what the pods mount.
    (streamconfig,) = by_kind(objects, "StreamConfig").values()
    jsonschema.Draft4Validator(streamconfig_schema).validate(streamconfig)
    parse_spec(streamconfig["spec"])
    assert streamconfig["spec"]["target"] == "pulsestream"
    operator = next(w for w in workloads if w["metadata"]["name"].endswith("-operator"))
    operator_env = restricted.env_of(operator["spec"]["template"]["spec"]["containers"][0])
    pattern = str(operator_env["OPERATOR_CONFIGMAP_NAME"])
    config_map = pattern.replace("{target}", streamconfig["spec"]["target"])
    for workload in workloads:
        if workload is operator:
            continue
        assert workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == "pulsestream"
        volumes = workload["spec"]["template"]["spec"]["volumes"]
        assert config_map in [v["configMap"]["name"] for v in volumes if "configMap" in v]

    # Least privilege is the same on both paths: the chart's Role grants exactly what k8s/ grants.
    k8s_role = next(o for o in yaml.safe_load_all((K8S / "operator.yaml").read_text()) if o["kind"] == "Role")
    (role,) = by_kind(objects, "Role").values()
    assert role["rules"] == k8s_role["rules"]

    notes = result["info"]["notes"]
    assert "grpcurl -plaintext 127.0.0.1:50051 list" in notes
    assert "port-forward" in notes or "http" in notes


@pytest.mark.usefixtures("helm_available")
@pytest.mark.kmock(cls=HelmReadyEmulator)
async def test_all_options_on_add_ingress_for_sse_hpa_servicemonitors_and_the_key_secret(
    kmock: Any, tmp_path: Path
) -> None:
    status, result = await install(kmock, tmp_path, ALL_ON)
    assert status == 0, result.get("error")
    objects = created_objects(kmock)

    ingress = by_kind(objects, "Ingress")["ps-streamer"]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] in by_kind(objects, "Service")

    streamer_pod = by_kind(objects, "Deployment")["ps-streamer"]["spec"]["template"]["spec"]
    streamer_env = restricted.env_of(streamer_pod["containers"][0])
    assert streamer_env["STREAMER_TRUSTED_PROXIES"], "behind the ingress, limits apply per browser"

    hpa = by_kind(objects, "HorizontalPodAutoscaler")["ps-streamer"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "ps-streamer"
    assert "replicas" not in by_kind(objects, "Deployment")["ps-streamer"]["spec"], "the HPA owns replicas"

    monitors = by_kind(objects, "ServiceMonitor")
    services = by_kind(objects, "Service")
    assert set(monitors) == {"ps-generator", "ps-streamer"}
    for name, monitor in monitors.items():
        service = services[name]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] in [p["name"] for p in service["spec"]["ports"]]
        assert monitor["metadata"]["labels"]["release"] == "prometheus"

    secret = by_kind(objects, "Secret")["ps-api-keys"]
    assert secret["stringData"]["api-keys"].splitlines() == ["key-one", "key-two"]
    streamer = by_kind(objects, "Deployment")["ps-streamer"]["spec"]["template"]["spec"]
    (container,) = streamer["containers"]
    env = restricted.env_of(container)
    key_file = str(env["STREAMER_API_KEYS_FILE"])
    mount = next(m for m in container["volumeMounts"] if key_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in streamer["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "ps-api-keys"
    assert "key-one" not in json.dumps(by_kind(objects, "Deployment")), "keys never appear outside the Secret"
    # Issue 17: one token secret for every replica, mounted as a file, made by the chart with the keys.
    token_file = str(env["STREAMER_TOKEN_SECRET_FILE"])
    mount = next(m for m in container["volumeMounts"] if token_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in streamer["volumes"] if v["name"] == mount["name"])
    token_secret = by_kind(objects, "Secret")[volume["secret"]["secretName"]]
    assert token_file.rsplit("/", 1)[1] in token_secret["data"]
    assert len(base64.b64decode(token_secret["data"]["token-secret"])) >= 32
    assert env["STREAMER_TOKEN_PREVIOUS_SECRET_FILE"].startswith(mount["mountPath"] + "/")

    generator = by_kind(objects, "Deployment")["ps-generator"]["spec"]["template"]["spec"]
    assert generator["containers"][0]["image"].startswith("registry.example.com/acme/pulsestream-generator@sha256:")
    assert generator["terminationGracePeriodSeconds"] == 3 + 20 + 15


# --- consistency with k8s/ and the operator ----------------------------------------------------


def test_the_chart_ships_the_same_crd_as_k8s() -> None:
    assert (CHART / "crds" / CRD_NAME).read_bytes() == (K8S / "crds" / CRD_NAME).read_bytes()


def test_the_chart_defaults_match_the_services_defaults() -> None:
    """The StreamConfig the chart creates by default carries the settings model's defaults."""
    spec = default_values()["streamConfig"]["spec"]
    assert parse_spec(spec).to_document() == parse_spec({}).to_document() | {"series": spec["series"]}


def test_values_schema_is_a_valid_draft7_schema_that_accepts_the_defaults_and_all_on() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(default_values())
    jsonschema.Draft7Validator(schema).validate(merged(default_values(), ALL_ON))
    assert (ROOT / "helm" / "pulsestream" / "templates" / "NOTES.txt").is_file()
