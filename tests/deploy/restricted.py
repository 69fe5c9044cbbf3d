"""Checks on rendered Kubernetes objects, shared by the k8s/ and Helm tests.

Both deployment paths must give the same guarantees, so both are held to the
same functions: restricted Pod Security, probes, drains that fit the grace
period, environment names the services really read, and schema validity.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError
from pulsestream_generator.settings import GeneratorSettings
from pulsestream_operator.settings import OperatorSettings
from pulsestream_streamer.settings import StreamerSettings

from pulsestream.durations import Duration
from pulsestream.envsettings import EnvSettings

KUBERNETES_VERSION = "1.31"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
SHARED_ENV = {"OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT"}
SETTINGS_BY_CONTAINER: dict[str, type[EnvSettings]] = {
    "generator": GeneratorSettings,
    "streamer": StreamerSettings,
    "operator": OperatorSettings,
}
#: Set by the service itself, not a settings field: STREAMER_API_KEYS_FILE is read by the key store.
EXTRA_ENV = {"streamer": {"STREAMER_API_KEYS_FILE"}}
#: The drain setting of each service, which the grace period must cover.
DRAIN_ENV = {"generator": "GENERATOR_GRACE_PERIOD", "streamer": "STREAMER_GRACEFUL_SHUTDOWN"}


def known_env(container: str) -> set[str]:
    """Every environment variable a service reads: its settings class plus the shared names."""
    settings = SETTINGS_BY_CONTAINER[container]
    return {settings.env_name(field) for field in settings.model_fields} | SHARED_ENV | EXTRA_ENV.get(container, set())


def schema_errors(objects: Iterable[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Validate every object against the Kubernetes 1.31 schemas in strict mode.

    Returns ``(errors, unknown kinds)``; custom resources have no bundled
    schema and are checked separately against their CRD.
    """
    errors, unknown = [], []
    for obj in objects:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except SchemaNotFoundError:
            unknown.append(where)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"{where}: {path}: {error.message}")
    return errors, unknown


def workloads(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]


def restricted_violations(workload: dict[str, Any]) -> list[str]:
    """What breaks the restricted Pod Security Standard (plus resources and seccomp) in a workload's pod."""
    name = workload["metadata"]["name"]
    pod = workload["spec"]["template"]["spec"]
    problems = _pod_violations(name, pod)
    for container in pod.get("initContainers", []) + pod["containers"]:
        problems += _container_violations(f"{name}/{container['name']}", container)
    return problems


def _pod_violations(name: str, pod: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    pod_sc = pod.get("securityContext", {})
    if pod_sc.get("runAsNonRoot") is not True:
        problems.append(f"{name}: pod runAsNonRoot is not true")
    if pod_sc.get("runAsUser", 1) == 0:
        problems.append(f"{name}: pod runs as uid 0")
    if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: pod seccompProfile is not RuntimeDefault")
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        problems.append(f"{name}: pod shares a host namespace")
    problems += [f"{name}: hostPath volume {v['name']}" for v in pod.get("volumes", []) if "hostPath" in v]
    return problems


def _container_violations(where: str, container: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    sc = container.get("securityContext", {})
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: readOnlyRootFilesystem is not true")
    if sc.get("privileged"):
        problems.append(f"{where}: privileged")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append(f"{where}: capabilities do not drop ALL")
    if sc.get("capabilities", {}).get("add"):
        problems.append(f"{where}: adds capabilities")
    if sc.get("runAsUser") == 0:
        problems.append(f"{where}: runs as uid 0")
    resources = container.get("resources", {})
    problems += [
        f"{where}: no {resource} {kind}"
        for kind in ("requests", "limits")
        for resource in ("cpu", "memory")
        if resource not in resources.get(kind, {})
    ]
    if container.get("image", "").endswith(":latest") or ":" not in container.get("image", ""):
        problems.append(f"{where}: image {container.get('image')!r} has no pinned tag")
    return problems


def env_of(container: dict[str, Any]) -> dict[str, str | None]:
    """A container's environment (``None`` for values taken from a reference)."""
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def unknown_env(workload: dict[str, Any]) -> list[str]:
    """Environment variables set on a service container that its settings class does not read (typos, drift)."""
    problems = []
    for container in workload["spec"]["template"]["spec"]["containers"]:
        if container["name"] not in SETTINGS_BY_CONTAINER:
            continue
        for name in env_of(container):
            if name not in known_env(container["name"]):
                problems.append(f"{workload['metadata']['name']}/{container['name']}: {name} is read by no setting")
    return problems


def invalid_env(workload: dict[str, Any]) -> list[str]:
    """Values the service would refuse at start: build its settings class from the literal values."""
    problems = []
    for container in workload["spec"]["template"]["spec"]["containers"]:
        settings = SETTINGS_BY_CONTAINER.get(container["name"])
        if settings is None:
            continue
        literal = {name: value for name, value in env_of(container).items() if value is not None}
        try:
            settings.from_env(literal)
        except ValueError as error:
            problems.append(f"{workload['metadata']['name']}/{container['name']}: {error}")
    return problems


def prestop_seconds(container: dict[str, Any]) -> float:
    """Seconds the preStop hook holds the container before SIGTERM (exec sleep or the native sleep action)."""
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    if command[:1] == ["sleep"]:
        return float(command[1])
    return 0.0


def drain_budget_problems(workload: dict[str, Any]) -> list[str]:
    """The grace period must cover preStop + the service's own drain, with margin to exit.

    Kubernetes counts the preStop hook inside terminationGracePeriodSeconds;
    if the service's drain (its settings default, or the value set here) does
    not finish within what is left, SIGKILL cuts streams mid-drain and events
    are lost.
    """
    pod = workload["spec"]["template"]["spec"]
    grace = float(pod.get("terminationGracePeriodSeconds", 30))
    problems = []
    for container in pod["containers"]:
        drain_env = DRAIN_ENV.get(container["name"])
        if drain_env is None:
            continue
        settings = SETTINGS_BY_CONTAINER[container["name"]]
        field = next(f for f in settings.model_fields if settings.env_name(f) == drain_env)
        value = env_of(container).get(drain_env)
        drain = Duration(value).seconds if value else Duration(str(settings.model_fields[field].default)).seconds
        pre_stop = prestop_seconds(container)
        if pre_stop < 1:
            problems.append(f"{workload['metadata']['name']}: no preStop delay for endpoint removal to propagate")
        if pre_stop + drain + 5 > grace:
            problems.append(
                f"{workload['metadata']['name']}: preStop {pre_stop}s + drain {drain}s + 5s margin "
                f"exceeds terminationGracePeriodSeconds {grace}s"
            )
    return problems
