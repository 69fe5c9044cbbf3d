"""``pulsestream-operator`` as a process: settings errors, liveness, JSON logs, a reconcile, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import httpx
import pytest
from emulated_cluster import CONFIGMAPS, NAMESPACE, Cluster, eventually
from loopback import free_port
from pulsestream_operator.crd import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.kmock(cls=Cluster)

SCRIPT = shutil.which("pulsestream-operator", path=str(Path(sys.executable).parent))


def environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OPERATOR_", "LOG_", "KUBECONFIG"))}
    env.update(extra)
    return env


async def test_a_bad_setting_stops_the_operator_with_exit_status_2() -> None:
    assert SCRIPT, "pulsestream-operator is not installed in the venv"
    process = await asyncio.create_subprocess_exec(
        SCRIPT,
        env=environment(OPERATOR_LIVENESS_PORT="not-a-port"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 2
    assert b"OPERATOR_LIVENESS_PORT='not-a-port' is invalid" in stderr


async def test_the_console_script_reconciles_serves_liveness_and_stops_on_sigterm(cluster: Cluster) -> None:
    assert SCRIPT, "pulsestream-operator is not installed in the venv"
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        SCRIPT,
        env=environment(
            OPERATOR_SERVER=str(cluster.url),
            OPERATOR_NAMESPACES=NAMESPACE,
            OPERATOR_LIVENESS_PORT=str(port),
            LOG_FORMAT="json",
        ),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as client:

            async def alive() -> bool:
                try:
                    return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            deadline = asyncio.get_running_loop().time() + 30
            while not await alive():
                assert process.returncode is None, "the operator exited"
                assert asyncio.get_running_loop().time() < deadline, "no liveness endpoint"
                await asyncio.sleep(0.05)

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
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
            lines = [line for line in stderr.decode().splitlines() if "aiohttp.access" not in line]
            raise AssertionError("\n".join(lines)[-8000:]) from None
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()[-2000:]
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    reconciled = [line for line in lines if line["message"].startswith("reconciled demo/demo generation 1 (create)")]
    assert reconciled, stderr.decode()[-2000:]
    assert reconciled[0]["logger"] == "pulsestream_operator.handlers"
    assert reconciled[0]["outcome"] == "created" and reconciled[0]["generation"] == 1
