"""Run the kopf operator with flags taken from :class:`OperatorSettings`.

This is ``kopf run -m pulsestream_operator.handlers`` without the CLI: the
same handlers and reactor, but our settings object (through kopf's memo)
and our logging set-up instead of the CLI's flags and formatter. The tests
start the operator through :func:`operate` too, in a thread, so they run
exactly what the container runs.

Peering: by default the operator is standalone and must run as ONE replica
(the Deployment uses the ``Recreate`` strategy). Reconciles are level-based
and resumed on start, so a restart only delays them; peering would need
kopf's KopfPeering CRDs and their RBAC. Set ``OPERATOR_PEERING_NAME`` (and
apply ``operator/peering.yaml``) to run several replicas, one active.
"""

from __future__ import annotations

from typing import Any

import kopf

from pulsestream_operator.settings import OperatorSettings


def kopf_arguments(settings: OperatorSettings) -> dict[str, Any]:
    """Keyword arguments for :func:`kopf.run` / :func:`kopf.operator` from our settings."""
    namespaces = settings.namespace_list
    return {
        "clusterwide": not namespaces,
        "namespaces": namespaces,
        "standalone": not settings.peering_name,
        "peering_name": settings.peering_name or None,
        "liveness_endpoint": (f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None),
    }


def operate(
    settings: OperatorSettings,
    *,
    kopf_settings: kopf.OperatorSettings | None = None,
    stop_flag: Any = None,
    ready_flag: Any = None,
) -> None:
    """Run the operator until ``stop_flag`` is set or a signal arrives (blocks; owns its event loop)."""
    from pulsestream_operator import handlers  # registers the handlers with kopf's default registry

    kopf.run(
        registry=kopf.get_default_registry(),
        settings=kopf_settings,
        memo=kopf.Memo(settings=settings, runtime=None),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        **kopf_arguments(settings),
    )
    del handlers
