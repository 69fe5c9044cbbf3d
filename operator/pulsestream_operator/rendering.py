"""The settings file and the ConfigMap that carries it, rendered without I/O.

The settings file has exactly the shape of a ``StreamConfig``'s ``spec``
(``pulsestream.spec``), with every field present so that the services'
environment defaults cannot leak in: what the pods run is what the
StreamConfig says, and the hash they report in ``/health`` equals the
``status.settingsHash`` the operator wrote. Values stay as written: a
``frequency`` of ``250ms`` is ``250ms`` in the file, and an integer rate
stays an integer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from pulsestream.spec import SpecError, StreamSpec, load_spec

MANAGED_BY = "pulsestream-operator"
#: Label on the ConfigMap naming the StreamConfig it was rendered from.
STREAMCONFIG_LABEL = "pulsestream.io/streamconfig"
#: Annotation with the settings hash: on the ConfigMap, and on a Deployment's pod template when it is rolled.
HASH_ANNOTATION = "pulsestream.io/settings-hash"
#: On the ConfigMap: the hash of the rolling fields the target's pods were last rolled for. Kept on the
#: object (not derived from a diff) so a roll that failed half-way is finished by the next reconcile.
ROLLED_ANNOTATION = "pulsestream.io/rolled-for"


def as_written(spec: StreamSpec, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The complete settings document, keeping the raw spelling of numbers the user wrote.

    ``spec`` fills in what ``raw`` leaves out; a number in ``raw`` that equals
    the parsed value (``5`` for ``5.0``) is kept as written.
    """
    return _keep_numbers(spec.to_document(), raw)


def _keep_numbers(parsed: dict[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in parsed.items():
        written = raw.get(key) if isinstance(raw, Mapping) else None
        if isinstance(value, dict) and isinstance(written, Mapping):
            result[key] = _keep_numbers(value, written)
        elif (
            isinstance(value, float) and isinstance(written, int) and not isinstance(written, bool) and written == value
        ):
            result[key] = written
        else:
            result[key] = value
    return result


def settings_file(document: Mapping[str, Any], source: str) -> str:
    """YAML text of the settings file, fields in the model's order, with a header naming ``source``."""
    header = (
        f"# Written by {MANAGED_BY} from StreamConfig {source}.\n"
        "# Edit the StreamConfig, not this file: the operator rewrites it.\n"
    )
    return header + yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)


def read_settings(text: str | None) -> dict[str, Any] | None:
    """The settings document in a settings file, or ``None`` if absent or unreadable."""
    if not text:
        return None
    try:
        return load_spec(text).to_document()
    except SpecError:
        return None


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Top-level settings that differ: ``{field: (old, new)}``; everything, when there was nothing before."""
    before = before or {}
    keys = list(after) + [key for key in before if key not in after]
    return {key: (before.get(key), after.get(key)) for key in keys if before.get(key) != after.get(key)}


def rolling_hash(document: Mapping[str, Any] | None, fields: Iterable[str]) -> str:
    """A short hash of the values of the fields that need a pod restart (the same for equal values)."""
    chosen = {key: (document or {}).get(key) for key in sorted(fields)}
    return hashlib.sha256(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:12]


def configmap(*, name: str, namespace: str, key: str, text: str, version: str, streamconfig: str) -> dict[str, Any]:
    """The ConfigMap body (without its owner reference, which the caller adds)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": MANAGED_BY,
                "app.kubernetes.io/part-of": "pulsestream",
                STREAMCONFIG_LABEL: streamconfig,
            },
            "annotations": {HASH_ANNOTATION: version},
        },
        "data": {key: text},
    }


def configmap_patch(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """A merge patch that turns ``existing`` into ``desired``, or ``None`` when nothing differs.

    Other keys of ``data``, labels and annotations are left alone; the owner
    references of ``desired`` are added to those already there.
    """
    patch: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    old_meta = existing.get("metadata", {})
    new_meta = desired["metadata"]
    for field in ("labels", "annotations"):
        old = old_meta.get(field) or {}
        diff = {k: v for k, v in new_meta.get(field, {}).items() if old.get(k) != v}
        if diff:
            meta[field] = diff
    old_refs = list(old_meta.get("ownerReferences") or [])
    old_uids = {ref.get("uid") for ref in old_refs}
    added = [ref for ref in new_meta.get("ownerReferences", []) if ref.get("uid") not in old_uids]
    if added:
        meta["ownerReferences"] = old_refs + added
    if meta:
        patch["metadata"] = meta
    old_data = existing.get("data") or {}
    data = {k: v for k, v in desired.get("data", {}).items() if old_data.get(k) != v}
    if data:
        patch["data"] = data
    return patch or None


def managed_by_us(obj: Mapping[str, Any] | None) -> bool:
    """Whether this operator made the object (its managed-by label), so it may adopt it again."""
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    return bool(labels.get("app.kubernetes.io/managed-by") == MANAGED_BY)


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's controlling owner, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def rollout_patch(version: str) -> dict[str, Any]:
    """Merge patch for a Deployment: a new pod-template annotation, so Kubernetes rolls its pods."""
    return {"spec": {"template": {"metadata": {"annotations": {HASH_ANNOTATION: version}}}}}
