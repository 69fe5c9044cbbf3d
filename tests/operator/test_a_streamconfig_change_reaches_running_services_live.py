"""End to end without a cluster: the operator's ConfigMap drives a real generator and streamer, live.

The operator reconciles StreamConfigs in the emulated API; the test plays
kubelet, copying the ConfigMap's settings file into the file both services
watch (``PULSESTREAM_SETTINGS_FILE``), atomically as kubelet's symlink swap
does. A spec change then shows in the generator's point spacing and in the
streamer's rate limit, with no restart, and the streamer's ``config_version``
equals the StreamConfig's ``status.settingsHash``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from emulated_cluster import CONFIGMAPS, NAMESPACE, STREAMCONFIGS, Cluster, StartOperator, eventually
from pulsestream_operator.crd import GROUP, PLURAL, VERSION
from services import Stack

from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc

pytestmark = [pytest.mark.kmock(cls=Cluster), pytest.mark.e2e]

PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"


def settings_hash(cluster: Cluster) -> str | None:
    status = cluster.objects[STREAMCONFIGS, NAMESPACE, "demo"].raw.get("status") or {}
    return status.get("settingsHash")


def kubelet_sync(cluster: Cluster, mounted: Path) -> None:
    """Copy the ConfigMap's file into the mounted path, replacing it atomically."""
    text = cluster.objects[CONFIGMAPS, NAMESPACE, "pulsestream-settings"].raw["data"]["settings.yaml"]
    staged = mounted.with_suffix(".new")
    staged.write_text(text)
    staged.replace(mounted)


async def change_spec(cluster: Cluster, change: dict[str, Any], mounted: Path) -> str:
    """Patch the StreamConfig, wait for the operator's new hash, and mount the new file; returns the hash."""
    before = settings_hash(cluster)
    async with cluster.patch(
        f"{PATH}/demo", json={"spec": change}, headers={"Content-Type": "application/merge-patch+json"}
    ) as response:
        assert response.status < 300
    new = await eventually(lambda: (h := settings_hash(cluster)) != before and h, what="the operator's new hash")
    kubelet_sync(cluster, mounted)
    return str(new)


async def spacing(stub: timeseries_pb2_grpc.TimeSeriesServiceStub, wanted: int, timeout: float = 20.0) -> None:
    """Read live raw points until five consecutive ``cpu`` points are ``wanted`` ms apart."""
    call = stub.Subscribe(timeseries_pb2.SubscribeRequest(series=["cpu"]))
    gaps: list[int] = []
    previous: int | None = None
    try:
        async with asyncio.timeout(timeout):
            async for response in call:
                for point in response.points:
                    if previous is not None:
                        gaps.append(point.sequence - previous)
                    previous = point.sequence
                if len(gaps) >= 5 and all(gap == wanted for gap in gaps[-5:]):
                    return
    except TimeoutError:
        raise AssertionError(f"points never {wanted} ms apart; last gaps {gaps[-10:]}") from None
    finally:
        call.cancel()


async def statuses(client: httpx.AsyncClient, url: str, count: int) -> list[int]:
    return [(await client.get(url)).status_code for _ in range(count)]


async def test_a_streamconfig_change_reaches_running_services_without_a_restart(
    cluster: Cluster, start_operator: StartOperator, tmp_path: Path, stack: Stack
) -> None:
    await start_operator()
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "StreamConfig",
        "metadata": {"name": "demo"},
        "spec": {
            "target": "pulsestream",
            "frequency": "200ms",
            "series": ["cpu", "memory"],
            "rateLimit": {"requestsPerSecond": 1, "burst": 2},
        },
    }
    async with cluster.post(PATH, json=body):
        pass
    first_hash = await eventually(lambda: settings_hash(cluster), what="the first settings hash")
    mounted = tmp_path / "settings.yaml"
    kubelet_sync(cluster, mounted)

    # Both services read the file the operator's ConfigMap holds, as both pods mount it.
    generator = await stack.aio.generator(settings_path=mounted)
    streamer = await stack.aio.streamer(generator, settings_path=mounted)
    health_url = f"{streamer.url}/health"
    series_url = f"{streamer.url}/v1/series"

    async with (
        httpx.AsyncClient(timeout=5) as client,
        grpc.aio.insecure_channel(generator.address) as channel,
    ):

        async def streamer_version() -> str | None:
            try:
                response = await client.get(health_url)
            except httpx.TransportError:
                return None
            return str(response.json().get("config_version"))

        async def reports(version: str) -> None:
            deadline = asyncio.get_running_loop().time() + 45
            while (seen := await streamer_version()) != version:
                assert asyncio.get_running_loop().time() < deadline, f"streamer reports {seen}, want {version}"
                await asyncio.sleep(0.05)

        await reports(first_hash)  # the operator's hash is what the service reports
        stub = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)
        await channel.channel_ready()
        await spacing(stub, 200)
        codes = await statuses(client, series_url, 3)
        assert codes[:2] == [200, 200] and codes[2] == 429, codes

        faster = await change_spec(
            cluster, {"frequency": "50ms", "rateLimit": {"requestsPerSecond": 50, "burst": 100}}, mounted
        )

        await spacing(stub, 50)  # same generator process, new spacing
        await reports(faster)
        assert await statuses(client, series_url, 20) == [200] * 20
        health = (await client.get(health_url)).json()
        assert health.get("settings_error") in (None, "")
