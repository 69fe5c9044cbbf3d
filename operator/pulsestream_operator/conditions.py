"""Kubernetes-shaped status conditions, computed without I/O.

A condition is ``{type, status, reason, message, lastTransitionTime,
observedGeneration}`` as in ``metav1.Condition``. ``lastTransitionTime``
changes only when ``status`` flips, so ``kubectl wait`` and dashboards can
tell how long a StreamConfig has been (un)ready; a new reason or message
alone keeps the old time.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

READY = "Ready"


def now() -> str:
    """The current time as Kubernetes writes it (RFC 3339, seconds, ``Z``)."""
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge(
    existing: Sequence[Mapping[str, Any]] | None,
    *,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    at: str,
) -> list[dict[str, Any]]:
    """The condition list with ``type_`` set, other conditions kept in place."""
    conditions = [dict(item) for item in existing or []]
    text = "True" if status else "False"
    new: dict[str, Any] = {"type": type_, "status": text, "reason": reason, "message": message}
    if generation is not None:
        new["observedGeneration"] = generation
    for index, old in enumerate(conditions):
        if old.get("type") == type_:
            new["lastTransitionTime"] = old.get("lastTransitionTime") if old.get("status") == text else at
            new["lastTransitionTime"] = new["lastTransitionTime"] or at
            conditions[index] = new
            return conditions
    new["lastTransitionTime"] = at
    conditions.append(new)
    return conditions


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of ``type_``, if present."""
    for item in conditions or []:
        if item.get("type") == type_:
            return item
    return None
