"""k8s/: `kubectl kustomize k8s/` renders objects a 1.31 API server accepts, hardened and wired together."""

from __future__ import annotations

from typing import Any

import jsonschema
import restricted
import yaml
from deploy_support import K8S, load_all
from pulsestream_operator.settings import OperatorSettings

from pulsestream.spec import parse_spec


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def test_every_rendered_object_passes_strict_kubernetes_1_31_validation(
    kustomize_objects: list[dict[str, Any]],
) -> None:
    errors, unknown = restricted.schema_errors(kustomize_objects)
    assert errors == []
    # Only our own custom resources lack a bundled schema; they are checked against the CRD below.
    assert all(where.startswith("StreamConfig/") for where in unknown), unknown


def test_the_kustomization_has_namespace_crd_operator_services_pdb_and_samples(
    kustomize_objects: list[dict[str, Any]],
) -> None:
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in kustomize_objects}
    for expected in [
        ("Namespace", "pulsestream"),
        ("CustomResourceDefinition", "streamconfigs.pulsestream.io"),
        ("ServiceAccount", "pulsestream-operator"),
        ("Role", "pulsestream-operator"),
        ("RoleBinding", "pulsestream-operator"),
        ("Deployment", "pulsestream-operator"),
        ("Deployment", "pulsestream-generator"),
        ("Service", "pulsestream-generator"),
        ("Deployment", "pulsestream-streamer"),
        ("Service", "pulsestream-streamer"),
        ("PodDisruptionBudget", "pulsestream-streamer"),
    ]:
        assert expected in kinds
    assert any(kind == "StreamConfig" for kind, _ in kinds), "sample StreamConfigs are part of the kustomization"
    namespaced = [obj for obj in kustomize_objects if obj["kind"] not in ("Namespace", "CustomResourceDefinition")]
    assert {obj["metadata"].get("namespace") for obj in namespaced} == {"pulsestream"}


def test_the_namespace_enforces_the_restricted_pod_security_standard(kustomize_objects: list[dict[str, Any]]) -> None:
    labels = by_kind(kustomize_objects, "Namespace")["pulsestream"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_pod_is_restricted_non_root_read_only_with_requests_and_limits(
    kustomize_objects: list[dict[str, Any]],
) -> None:
    workloads = restricted.workloads(kustomize_objects)
    assert len(workloads) == 3
    assert [problem for w in workloads for problem in restricted.restricted_violations(w)] == []


def test_grace_periods_cover_prestop_plus_each_services_drain(kustomize_objects: list[dict[str, Any]]) -> None:
    workloads = restricted.workloads(kustomize_objects)
    assert [problem for w in workloads for problem in restricted.drain_budget_problems(w)] == []


def test_every_environment_variable_is_one_the_service_reads_with_a_valid_value(
    kustomize_objects: list[dict[str, Any]],
) -> None:
    workloads = restricted.workloads(kustomize_objects)
    assert [problem for w in workloads for problem in restricted.unknown_env(w)] == []
    assert [problem for w in workloads for problem in restricted.invalid_env(w)] == []


def test_generator_uses_native_grpc_probes_and_readiness_follows_the_drain(
    kustomize_objects: list[dict[str, Any]],
) -> None:
    generator = container(by_kind(kustomize_objects, "Deployment")["pulsestream-generator"], "generator")
    assert generator["livenessProbe"]["grpc"]["port"] == 50051
    # Readiness names the service whose health turns NOT_SERVING when a drain starts.
    assert generator["readinessProbe"]["grpc"] == {"port": 50051, "service": "pulsestream.v1.TimeSeriesService"}
    assert restricted.env_of(generator)["GENERATOR_HOST"] == "0.0.0.0"


def test_streamer_probes_health_and_reaches_the_generator_service(kustomize_objects: list[dict[str, Any]]) -> None:
    streamer = container(by_kind(kustomize_objects, "Deployment")["pulsestream-streamer"], "streamer")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert streamer[probe]["httpGet"] == {"path": "/health", "port": "http"}
    env = restricted.env_of(streamer)
    host, port = str(env["STREAMER_GENERATOR_ADDRESS"]).split(":")
    service = by_kind(kustomize_objects, "Service")[host]
    assert int(port) in [p["port"] for p in service["spec"]["ports"]]
    assert env["STREAMER_HOST"] == "0.0.0.0"


def test_services_select_their_pods_and_target_named_container_ports(kustomize_objects: list[dict[str, Any]]) -> None:
    deployments = by_kind(kustomize_objects, "Deployment")
    for name, service in by_kind(kustomize_objects, "Service").items():
        pod = deployments[name]["spec"]["template"]
        selector = service["spec"]["selector"]
        assert selector.items() <= pod["metadata"]["labels"].items(), name
        port_names = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names, name


def test_the_streamer_disruption_budget_keeps_one_pod_of_several(kustomize_objects: list[dict[str, Any]]) -> None:
    pdb = by_kind(kustomize_objects, "PodDisruptionBudget")["pulsestream-streamer"]
    deployment = by_kind(kustomize_objects, "Deployment")["pulsestream-streamer"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"], "a budget equal to replicas blocks drains"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_pods_mount_the_operators_configmap_as_a_live_directory_and_keys_only_from_a_secret(
    kustomize_objects: list[dict[str, Any]],
) -> None:
    samples = list(by_kind(kustomize_objects, "StreamConfig").values())
    operator_deployment = by_kind(kustomize_objects, "Deployment")["pulsestream-operator"]
    operator_env = restricted.env_of(container(operator_deployment, "operator"))
    operator = OperatorSettings.from_env({k: v for k, v in operator_env.items() if v is not None})
    written = {operator.configmap_for(s["metadata"]["name"], s["spec"].get("target")) for s in samples}
    for name in ("pulsestream-generator", "pulsestream-streamer"):
        deployment = by_kind(kustomize_objects, "Deployment")[name]
        pod = deployment["spec"]["template"]["spec"]
        (main,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        settings_file = restricted.env_of(main)["PULSESTREAM_SETTINGS_FILE"]
        (mount,) = [m for m in main["volumeMounts"] if settings_file.startswith(m["mountPath"] + "/")]
        # A subPath mount would freeze the file at pod start: live updates need the directory.
        assert "subPath" not in mount
        config_map = volumes[mount["name"]]["configMap"]
        assert config_map["optional"] is True, "pods must start before the operator's first reconcile"
        assert config_map["name"] in written, "a sample StreamConfig must drive the ConfigMap the pods mount"
        assert settings_file.rsplit("/", 1)[1] == operator.settings_key
        # The operator rolls the target's Deployments found by this label.
        assert deployment["metadata"]["labels"][operator.target_label] in {s["spec"].get("target") for s in samples}
        assert all("API_KEYS" not in key for key in restricted.env_of(main) if key != "STREAMER_API_KEYS_FILE")
    streamer_volumes = by_kind(kustomize_objects, "Deployment")["pulsestream-streamer"]["spec"]["template"]["spec"]
    secrets = [v["secret"] for v in streamer_volumes["volumes"] if "secret" in v]
    assert [s["secretName"] for s in secrets] == ["pulsestream-api-keys"]
    assert not by_kind(kustomize_objects, "ConfigMap"), "the operator owns the settings ConfigMap (see kustomization)"


def test_the_operator_role_is_namespaced_and_grants_what_the_operator_needs(
    kustomize_objects: list[dict[str, Any]],
) -> None:
    assert not by_kind(kustomize_objects, "ClusterRole")
    assert not by_kind(kustomize_objects, "ClusterRoleBinding")
    rules = by_kind(kustomize_objects, "Role")["pulsestream-operator"]["rules"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = {
        ("pulsestream.io", "streamconfigs", "watch"),
        ("pulsestream.io", "streamconfigs", "list"),
        ("pulsestream.io", "streamconfigs", "patch"),
        ("pulsestream.io", "streamconfigs/status", "patch"),
        ("", "configmaps", "get"),
        ("", "configmaps", "create"),
        ("", "configmaps", "patch"),
        ("", "configmaps", "delete"),
        ("apps", "deployments", "list"),
        ("apps", "deployments", "patch"),
        ("", "events", "create"),
    }
    assert needed <= granted
    assert not any("*" in (group, resource, verb) for group, resource, verb in granted)
    binding = by_kind(kustomize_objects, "RoleBinding")["pulsestream-operator"]
    operator = by_kind(kustomize_objects, "Deployment")["pulsestream-operator"]
    assert binding["subjects"][0]["name"] == operator["spec"]["template"]["spec"]["serviceAccountName"]
    # Reconciling only its own namespace is what makes a Role (not a ClusterRole) enough.
    namespaces = next(e for e in container(operator, "operator")["env"] if e["name"] == "OPERATOR_NAMESPACES")
    assert namespaces["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_sample_streamconfigs_are_valid_for_the_crd_and_for_the_services(
    kustomize_objects: list[dict[str, Any]], streamconfig_schema: dict[str, Any]
) -> None:
    files = sorted((K8S / "samples").glob("*.yaml"))
    assert files, "k8s/samples/ holds sample StreamConfigs"
    samples = [doc for path in files for doc in load_all(path.read_text())]
    rendered = by_kind(kustomize_objects, "StreamConfig")
    # OpenAPI v3.0 (the CRD's dialect) shares draft 4's keywords, boolean exclusiveMinimum included.
    validator = jsonschema.Draft4Validator(streamconfig_schema)
    for sample in samples:
        validator.validate(sample)
        parse_spec(sample["spec"])  # the services' own model accepts it too
    # Every file under samples/ that the kustomization lists renders; they all validate.
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = [r for r in kustomization["resources"] if r.startswith("samples/")]
    assert listed and len(rendered) >= len(listed)


def test_a_bad_streamconfig_is_rejected_by_the_crd_schema(streamconfig_schema: dict[str, Any]) -> None:
    bad = {
        "apiVersion": "pulsestream.io/v1alpha1",
        "kind": "StreamConfig",
        "metadata": {"name": "bad"},
        "spec": {"bufferSize": 0, "series": []},
    }
    validator = jsonschema.Draft4Validator(streamconfig_schema)
    assert list(validator.iter_errors(bad)), "the CRD schema must refuse a zero buffer and no series"
