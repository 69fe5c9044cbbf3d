"""The kopf handlers: from a ``StreamConfig`` to the ConfigMap the pods mount.

Every create, update and resume runs the same level-based :func:`reconcile`:
validate (:func:`pulsestream.spec.parse_spec`: each value, then the
spec's cross-field rules, each refusal with its reason), render
the settings file, create or patch the ConfigMap only if it differs, roll the
target's Deployments when a change cannot apply live, and write ``status``.

A bad spec is an answer, not an error: the last good settings stay in the
ConfigMap, ``Ready`` turns ``False`` with the reason, a Warning Event says
why, and the handler returns, so kopf does not retry a spec that cannot get
better by itself. API trouble is the opposite: :class:`kopf.TemporaryError`,
retried with a delay.

Deletion needs no handler work: the ConfigMap's owner reference lets the
garbage collector remove it, so there is no finalizer to block a delete
while the operator is down.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf

from pulsestream.spec import Problem, SpecError, StreamSpec, parse_spec
from pulsestream_operator import conditions, rendering
from pulsestream_operator.crd import GROUP, PLURAL, VERSION
from pulsestream_operator.kubeapi import KubeClient, KubeError
from pulsestream_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

#: Prefix of kopf's own bookkeeping annotations on StreamConfigs (progress, last handled spec).
ANNOTATION_PREFIX = "pulsestream.io"
#: Delay before kopf retries a reconcile that hit an API error.
RETRY_DELAY = 10.0


@dataclass
class Runtime:
    """What the handlers share, kept in kopf's memo: the settings and the API client."""

    settings: OperatorSettings
    api: KubeClient


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime = memo.get("runtime")
    if not isinstance(runtime, Runtime):
        settings = memo.get("settings")
        if not isinstance(settings, OperatorSettings):  # started as `kopf run -m pulsestream_operator.handlers`
            settings = OperatorSettings.from_env()
        runtime = Runtime(settings=settings, api=KubeClient(lambda: _credentials(settings)))
        memo["runtime"] = runtime
    return runtime


async def _credentials(settings: OperatorSettings) -> kopf.ConnectionInfo | None:
    kopf_settings = kopf.OperatorSettings()
    if settings.server:
        return kopf.ConnectionInfo(server=settings.server, default_namespace="default")
    return kopf.login_with_service_account(settings=kopf_settings) or kopf.login_with_kubeconfig(settings=kopf_settings)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping under our own annotation prefix and build the shared runtime."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/finalizer"
    runtime = _runtime(memo)
    if runtime.settings.namespace_list:
        # Exact namespaces: no need to discover namespaces or watch CRDs cluster-wide, so a
        # namespaced Role is all the RBAC it takes (kopf scans the API groups once at start).
        settings.scanning.disabled = True
    logger.info(
        "operator configured",
        extra={
            "namespaces": runtime.settings.namespace_list or "all",
            "configmap_name": runtime.settings.configmap_name,
            "roll_on": sorted(runtime.settings.rolling_fields),
        },
    )


@kopf.on.login()
async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo | None:
    """An explicit server (tests, ``kubectl proxy``), else the service account, else the kubeconfig."""
    runtime = _runtime(memo)
    info = await _credentials(runtime.settings)
    if info is None:
        raise kopf.LoginError("no credentials: not in a pod, no kubeconfig, and OPERATOR_SERVER is empty")
    await runtime.api.use(info)
    logger.info("logged in", extra={"server": info.server})
    return info


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await _runtime(memo).api.close()


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def reconcile(
    *,
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    name: str,
    namespace: str | None,
    patch: kopf.Patch,
    memo: kopf.Memo,
    reason: str,
    **_: Any,
) -> None:
    """Bring the ConfigMap, the Deployments and ``status`` in line with the spec (idempotent)."""
    if namespace is None:  # the CRD is namespaced; kopf's signature allows cluster objects
        raise kopf.PermanentError("a StreamConfig must be in a namespace")
    runtime = _runtime(memo)
    generation = meta.get("generation")
    raw = dict(spec)
    try:
        parsed = parse_spec(raw)
    except SpecError as error:  # InvalidSpec, or the reason of each broken cross-field rule
        _reject(body=body, status=status, patch=patch, generation=generation, problems=error.problems, cause=reason)
        return
    try:
        await _apply(
            runtime=runtime,
            body=body,
            parsed=parsed,
            raw=raw,
            status=status,
            patch=patch,
            name=name,
            namespace=namespace,
            generation=generation,
            cause=reason,
        )
    except KubeError as error:
        logger.warning(
            "reconcile of %s/%s failed, will retry: %s",
            namespace,
            name,
            error,
            extra={"namespace": namespace, "streamconfig": name, "generation": generation},
        )
        raise kopf.TemporaryError(f"Kubernetes API: {error}", delay=RETRY_DELAY) from error


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def deleted(*, name: str, namespace: str | None, status: kopf.Status, **_: Any) -> None:
    """Log only: the ConfigMap's owner reference lets Kubernetes' garbage collector remove it."""
    logger.info(
        "streamconfig %s/%s deleted; ConfigMap %s goes with it (owner reference)",
        namespace,
        name,
        status.get("configMap"),
        extra={"namespace": namespace, "streamconfig": name},
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a valid spec asks for: the settings document as written, its hash, the target, the ConfigMap."""

    document: dict[str, Any]
    version: str
    target: str
    cm_name: str
    configmap: dict[str, Any]
    #: The rolling-fields hash the pods must be rolled for (see :func:`_rolled_for`).
    roll_for: str
    #: The StreamConfig's uid: the owner the ConfigMap must have.
    uid: str


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one reconcile did, for ``status``, the log and the Events."""

    written: str  # created | patched | unchanged
    changed: dict[str, tuple[Any, Any]]
    rolled: list[str]
    rolling: list[str]
    retargeted: bool


async def _apply(
    *,
    runtime: Runtime,
    body: kopf.Body,
    parsed: StreamSpec,
    raw: Mapping[str, Any],
    status: kopf.Status,
    patch: kopf.Patch,
    name: str,
    namespace: str,
    generation: int | None,
    cause: str,
) -> None:
    """Apply a valid spec: read the ConfigMap, refuse one we do not own, write it, roll, report.

    Each step is idempotent, so a retry after a :class:`KubeError` at any point finishes the job.
    """
    settings, api = runtime.settings, runtime.api
    plan = _plan(settings, body, parsed, raw, name=name, namespace=namespace)
    existing = await api.get_configmap(namespace, plan.cm_name)
    conflict = _conflict(existing, plan)
    if conflict is not None:
        _reject(body=body, status=status, patch=patch, generation=generation, problems=[conflict], cause=cause)
        return
    before = rendering.read_settings((existing or {}).get("data", {}).get(settings.settings_key))
    rolled_for = _rolled_for(existing, before, plan, settings)
    written = await _write_configmap(api, namespace, plan, existing, rolled_for)
    retargeted = await _retire_previous_configmap(api, namespace, status.get("configMap"), plan)
    changed = rendering.changed_fields(before, plan.document)
    rolled = await _roll_if_needed(api, settings, namespace, plan, rolled_for=rolled_for, retargeted=retargeted)
    outcome = _Outcome(
        written=written,
        changed=changed,
        rolled=rolled,
        rolling=sorted(settings.rolling_fields & set(changed)) if before is not None else [],
        retargeted=retargeted,
    )
    _report(body, status, patch, plan, outcome, name=name, namespace=namespace, generation=generation, cause=cause)


def _plan(
    settings: OperatorSettings,
    body: kopf.Body,
    parsed: StreamSpec,
    raw: Mapping[str, Any],
    *,
    name: str,
    namespace: str,
) -> _Plan:
    """The desired ConfigMap (owned by the StreamConfig) and the hashes it is judged by."""
    document = rendering.as_written(parsed, raw)
    version = parsed.version()
    cm_name = settings.configmap_for(name, parsed.target)
    desired = rendering.configmap(
        name=cm_name,
        namespace=namespace,
        key=settings.settings_key,
        text=rendering.settings_file(document, f"{namespace}/{name}"),
        version=version,
        streamconfig=name,
    )
    kopf.append_owner_reference(desired, owner=body)
    return _Plan(
        document=document,
        version=version,
        target=parsed.target or name,
        cm_name=cm_name,
        configmap=desired,
        roll_for=rendering.rolling_hash(document, settings.rolling_fields),
        uid=str(body.metadata.uid),
    )


def _conflict(existing: Mapping[str, Any] | None, plan: _Plan) -> Problem | None:
    """A reason not to touch an existing ConfigMap: another controller's, or one we did not make."""
    if existing is None:
        return None
    owner = rendering.controller_uid(existing)
    if owner == plan.uid or (owner is None and rendering.managed_by_us(existing)):
        return None
    message = (
        f"ConfigMap {plan.cm_name} is controlled by another object (uid {owner}); not overwriting it"
        if owner
        else f"ConfigMap {plan.cm_name} exists and was not made by pulsestream-operator; not taking it over "
        "(deleting the StreamConfig would then delete it): remove it or choose another target"
    )
    return Problem("ConfigMapConflict", message)


def _rolled_for(
    existing: Mapping[str, Any] | None,
    before: Mapping[str, Any] | None,
    plan: _Plan,
    settings: OperatorSettings,
) -> str:
    """The rolling hash the pods were last rolled for.

    Recorded on the ConfigMap, so a roll that failed after the ConfigMap was patched is finished by the
    retry (a diff would be empty by then). A new ConfigMap starts at the current value: pods read it when
    they start.
    """
    recorded = ((existing or {}).get("metadata", {}).get("annotations") or {}).get(rendering.ROLLED_ANNOTATION)
    if recorded:
        return str(recorded)
    return rendering.rolling_hash(before, settings.rolling_fields) if before else plan.roll_for


async def _write_configmap(
    api: KubeClient, namespace: str, plan: _Plan, existing: Mapping[str, Any] | None, rolled_for: str
) -> str:
    """Create the ConfigMap, or patch what differs; returns ``created``, ``patched`` or ``unchanged``."""
    metadata = plan.configmap["metadata"]
    annotations = {**metadata["annotations"], rendering.ROLLED_ANNOTATION: rolled_for}
    desired = {**plan.configmap, "metadata": {**metadata, "annotations": annotations}}
    if existing is None:
        await api.create_configmap(namespace, desired)
        return "created"
    change = rendering.configmap_patch(existing, desired)
    if change is None:
        return "unchanged"
    await api.patch_configmap(namespace, plan.cm_name, change)
    return "patched"


async def _retire_previous_configmap(api: KubeClient, namespace: str, previous: object, plan: _Plan) -> bool:
    """After a target change, delete the ConfigMap written before (if it is still ours); True if retargeted."""
    if not previous or previous == plan.cm_name:
        return False
    old = await api.get_configmap(namespace, str(previous))
    if old is not None and rendering.controller_uid(old) == plan.uid:
        await api.delete_configmap(namespace, str(previous))
    return True


async def _roll_if_needed(
    api: KubeClient,
    settings: OperatorSettings,
    namespace: str,
    plan: _Plan,
    *,
    rolled_for: str,
    retargeted: bool,
) -> list[str]:
    """Roll the target's Deployments when the target or a rolling field changed; record what they run."""
    stale = rolled_for != plan.roll_for
    if not (retargeted or (settings.rolling_fields and stale)):
        return []
    rolled = await _roll(api, settings, namespace, plan.target, plan.version)
    if stale:
        await api.patch_configmap(
            namespace, plan.cm_name, {"metadata": {"annotations": {rendering.ROLLED_ANNOTATION: plan.roll_for}}}
        )
    return rolled


def _report(
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    plan: _Plan,
    outcome: _Outcome,
    *,
    name: str,
    namespace: str,
    generation: int | None,
    cause: str,
) -> None:
    """Ready=True in ``status``, one log line, and an Event for each thing that changed in the cluster."""
    message = f"settings {plan.version} are in ConfigMap {plan.cm_name}"
    _set_status(
        status,
        patch,
        generation=generation,
        ready=True,
        reason="Applied",
        message=message,
        extra={"configMap": plan.cm_name, "settingsHash": plan.version},
    )
    rolled, changed = outcome.rolled, outcome.changed
    logger.info(
        "reconciled %s/%s generation %s (%s): ConfigMap %s %s; changed %s%s",
        namespace,
        name,
        generation,
        cause,
        plan.cm_name,
        outcome.written,
        ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changed.items()) or "nothing",
        f"; rolled {', '.join(rolled)}" if rolled else "",
        extra={
            "namespace": namespace,
            "streamconfig": name,
            "generation": generation,
            "cause": cause,
            "configmap": plan.cm_name,
            "outcome": outcome.written,
            "changed": sorted(changed),
            "settings_hash": plan.version,
            "rolled": rolled,
        },
    )
    if outcome.written != "unchanged":
        kopf.info(body, reason="SettingsApplied", message=f"{message} ({outcome.written})")
    if rolled:
        why = (
            "target changed"
            if outcome.retargeted
            else f"{', '.join(outcome.rolling) or 'fields that need a restart'} changed"
        )
        kopf.info(body, reason="Rolled", message=f"rolled Deployments {', '.join(rolled)}: {why}")


async def _roll(api: KubeClient, settings: OperatorSettings, namespace: str, target: str, version: str) -> list[str]:
    """Annotate the pod template of each target Deployment with ``version``; returns those changed."""
    rolled = []
    for deployment in await api.list_deployments(namespace, settings.target_label, target):
        dep_name = deployment["metadata"]["name"]
        template = deployment.get("spec", {}).get("template", {}).get("metadata", {}) or {}
        if (template.get("annotations") or {}).get(rendering.HASH_ANNOTATION) == version:
            continue
        await api.patch_deployment(namespace, dep_name, rendering.rollout_patch(version))
        rolled.append(dep_name)
    return rolled


def _reject(
    *,
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    generation: int | None,
    problems: Sequence[Problem],
    cause: str,
) -> None:
    """Ready=False with the first problem's reason; a Warning Event when the verdict is new."""
    reason = problems[0].reason
    message = "; ".join(problem.message for problem in problems)
    previous = conditions.find(status.get("conditions"), conditions.READY)
    is_new = (
        previous is None
        or previous.get("status") != "False"
        or previous.get("message") != message
        or status.get("observedGeneration") != generation
    )
    _set_status(status, patch, generation=generation, ready=False, reason=reason, message=message, extra={})
    meta = body.metadata
    logger.warning(
        "rejected %s/%s generation %s (%s): %s: %s; keeping the last good settings",
        meta.namespace,
        meta.name,
        generation,
        cause,
        reason,
        message,
        extra={"namespace": meta.namespace, "streamconfig": meta.name, "generation": generation, "reason": reason},
    )
    if is_new:
        kopf.warn(body, reason=reason, message=message)


def _set_status(
    status: kopf.Status,
    patch: kopf.Patch,
    *,
    generation: int | None,
    ready: bool,
    reason: str,
    message: str,
    extra: Mapping[str, Any],
) -> None:
    """Patch only the status fields that differ (an unchanged status is not written)."""
    desired: dict[str, Any] = dict(extra)
    if generation is not None:
        desired["observedGeneration"] = generation
    desired["conditions"] = conditions.merge(
        status.get("conditions"),
        type_=conditions.READY,
        status=ready,
        reason=reason,
        message=message,
        generation=generation,
        at=conditions.now(),
    )
    for key, value in desired.items():
        if status.get(key) != value:
            patch.status[key] = value
