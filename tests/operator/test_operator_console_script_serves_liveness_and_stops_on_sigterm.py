"""``pulsestream-operator`` as a process: settings errors, liveness, JSON logs, a reconcile, SIGTERM."""

from __future__ import annotations

import asyncio

import pytest
from emulated_cluster import CONFIGMAPS, NAMESPACE, Cluster, eventually
from pulsestream_operator.crd import GROUP, PLURAL, VERSION
from services import Operator, Stack, run_to_exit

pytestmark = pytest.mark.kmock(cls=Cluster)


async def test_a_bad_setting_stops_the_operator_with_exit_status_2() -> None:
    done = await asyncio.to_thread(run_to_exit, "pulsestream-operator", {"OPERATOR_LIVENESS_PORT": "not-a-port"}, 30)
    assert done.returncode == 2
    assert "OPERATOR_LIVENESS_PORT='not-a-port' is invalid" in done.stderr


def _log(operator: Operator) -> str:
    """Its log without the liveness probes' access lines."""
    return "\n".join(line for line in operator.log_text().splitlines() if "aiohttp.access" not in line)


async def test_the_console_script_reconciles_serves_liveness_and_stops_on_sigterm(
    cluster: Cluster, stack: Stack
) -> None:
    # Ready means kopf's liveness endpoint answers /healthz.
    operator = await stack.aio.operator(
        OPERATOR_SERVER=str(cluster.url), OPERATOR_NAMESPACES=NAMESPACE, LOG_FORMAT="json"
    )
    try:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "StreamConfig",
            "metadata": {"name": "demo", "namespace": NAMESPACE},
            "spec": {"frequency": "300ms"},
        }
        async with cluster.post(f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}", json=body):
            pass
        try:
            await eventually(lambda: cluster.objects[CONFIGMAPS, NAMESPACE, "demo-settings"].raw, timeout=30)
        except AssertionError:
            await operator.aio.stop(30)
            raise AssertionError(_log(operator)[-8000:]) from None
    finally:
        await operator.aio.stop(30)  # SIGTERM; kmock must keep serving on this loop while kopf shuts down
    assert operator.returncode == 0, operator.log_text()[-2000:]
    lines = operator.log_records()
    reconciled = [line for line in lines if line["message"].startswith("reconciled demo/demo generation 1 (create)")]
    assert reconciled, operator.log_text()[-2000:]
    assert reconciled[0]["logger"] == "pulsestream_operator.handlers"
    assert reconciled[0]["outcome"] == "created" and reconciled[0]["generation"] == 1
