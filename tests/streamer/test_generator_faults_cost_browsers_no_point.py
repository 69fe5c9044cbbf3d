"""Generator faults seen from browsers: killed and restarted, a replica lost, a replica frozen.

Everything is a real process: generators and a streamer from their console scripts, and browser-like
EventSource clients that reconnect with Last-Event-ID. Each test asserts continuity end to end: for each
series, consecutive sequences exactly one generator period apart, from before the fault to well after it.
"""

from __future__ import annotations

import time

import pytest
from loopback import wait_until
from services import Stack
from sse import EventSource, assert_continuous, following

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

PATH = "/v1/stream?series=cpu,memory&window=1s"
OTHER = "/v1/stream?series=latency&window=1s"


def _upstream_error(event: object) -> bool:
    return getattr(event, "event", "") == "notice" and event.data.get("code") == "upstream_unavailable"  # type: ignore[attr-defined]


async def test_a_generator_killed_and_restarted_on_its_port_costs_browsers_no_point(stack: Stack) -> None:
    generator = await stack.aio.generator()
    streamer = await stack.aio.streamer([generator])
    clients = [EventSource([streamer.url], PATH), EventSource([streamer.url], PATH), EventSource([streamer.url], OTHER)]
    async with following(*clients):
        for client in clients:
            await client.wait_for(lambda e: e.event == "points", what="live points")
        generator.kill()
        for client in clients:
            await client.wait_for(_upstream_error, what="the upstream_unavailable error event")
        last = max(client.last_seq() for client in clients)

        async def degraded() -> bool:
            health = await streamer.aio.health()
            return health["status"] == "degraded" and health["upstream_detail"]["streams"] == 0

        await wait_until(degraded, what="/health to report the outage")
        # Down for at least a second of ticks, which the restarted generator must replay.
        await wait_until(lambda: time.time_ns() // 1_000_000 > last + 1000, what="a second of missed ticks")
        generator.start()
        await generator.aio.wait_ready()
        for client in clients:
            await client.wait_past(last + 2000, timeout=30)
    assert (await streamer.aio.health())["status"] == "ok"
    for client in clients:
        series = {"cpu", "memory"} if client.path == PATH else {"latency"}
        assert_continuous(client, series)
        # The error came first, then the missed points (the ones after the last seen before the outage).
        error_at = client.events.index(next(e for e in client.events if _upstream_error(e)))
        after = [e for e in client.events[error_at:] if e.event in ("points", "snapshot")]
        assert after and min(p["seq"] for p in after[0].data["points"]) <= last + 100


async def test_losing_one_of_two_replicas_fails_over_without_a_gap(stack: Stack) -> None:
    one = await stack.aio.generator()
    two = await stack.aio.generator()
    streamer = await stack.aio.streamer([one, two])
    clients = [EventSource([streamer.url], PATH), EventSource([streamer.url], OTHER)]
    async with following(*clients):
        for client in clients:
            await client.wait_for(lambda e: e.event == "points", what="live points")
        assert (await streamer.aio.health())["upstream_detail"]["address"] == one.address
        one.kill()
        last = max(client.last_seq() for client in clients)
        for client in clients:
            await client.wait_past(last + 1000)
    health = await streamer.aio.health()
    assert health["upstream_detail"]["address"] == two.address
    assert health["status"] == "ok"
    assert_continuous(clients[0], {"cpu", "memory"})
    assert_continuous(clients[1], {"latency"})


async def test_a_frozen_replica_is_found_by_keepalive_and_the_streamer_moves_to_the_other(stack: Stack) -> None:
    one = await stack.aio.generator()
    two = await stack.aio.generator()
    # keepalive 1s + 1s (the test streamers' settings): a frozen peer is noticed within about 2 s.
    streamer = await stack.aio.streamer([one, two])
    client = EventSource([streamer.url], PATH)
    async with following(client):
        await client.wait_for(lambda e: e.event == "points", what="live points")
        frozen_at = time.monotonic()
        one.pause()
        try:
            await client.wait_for(_upstream_error, timeout=15, what="keepalive to notice the frozen generator")
            detected = time.monotonic() - frozen_at
            last = client.last_seq()
            await client.wait_past(last + 1000)
        finally:
            one.resume()
    print(f"frozen generator noticed after {detected:.2f}s")
    assert detected < 1.0 + 1.0 + 3.0, f"took {detected:.1f}s to notice (keepalive 1s + timeout 1s)"
    assert (await streamer.aio.health())["upstream_detail"]["address"] == two.address
    assert_continuous(client, {"cpu", "memory"})


async def test_a_frozen_only_generator_is_reported_then_resumed_without_gap(stack: Stack) -> None:
    generator = await stack.aio.generator()
    streamer = await stack.aio.streamer([generator])
    client = EventSource([streamer.url], PATH)
    async with following(client):
        await client.wait_for(lambda e: e.event == "points", what="live points")
        generator.pause()
        try:
            await client.wait_for(_upstream_error, timeout=15, what="keepalive to notice the frozen generator")

            async def reported() -> dict[str, object] | None:
                health = await streamer.aio.health()
                return health if health["status"] == "degraded" and health["upstream_detail"]["error"] else None

            health = await wait_until(reported, what="/health to report the frozen upstream")
            assert health["upstream"] != "ready" or health["upstream_detail"]["streams"] == 0
            last = client.last_seq()
        finally:
            generator.resume()
        await client.wait_past(last + 1000, timeout=40)
    assert (await streamer.aio.health())["status"] == "ok"
    assert_continuous(client, {"cpu", "memory"})
