"""Published history in Redis Streams (GENERATOR_HISTORY_URL), shared by generator replicas, in process.

Each test starts a real ``redis-server`` on a free loopback port and real generator apps (the
``start_generator`` fixture), and checks what a user relies on: a point published to one replica is
served by every replica with the same sequence, previous link and buckets (late marks included);
Redis unreachable means UNAVAILABLE for producers, NOT_SERVING for the ingest service only, and the
mirror keeps serving; nothing acknowledged is missed when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from certificates import authority, require_openssl, signed
from generator_streams import StartGenerator, points_by_series, read_until
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loopback import wait_until
from pulsestream_generator import redisclient
from pulsestream_generator.publishing import SeriesPoints
from pulsestream_generator.server import GeneratorApp
from pulsestream_generator.settings import GeneratorSettings
from redisserver import RedisServer

from pulsestream.refusals import Reason, refusal_of
from pulsestream.v1 import ingest_pb2, ingest_pb2_grpc, timeseries_pb2, timeseries_pb2_grpc


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


class Replica:
    """Stubs of one generator app over one channel."""

    def __init__(self, app: GeneratorApp, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        self.series = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    async def publish(self, *points: tuple[str, float, int | None]) -> ingest_pb2.PublishResponse:
        request = ingest_pb2.PublishRequest()
        for series, value, t in points:
            point = request.points.add(series=series, value=value)
            if t is not None:
                point.timestamp.seconds, millis = divmod(t, 1000)
                point.timestamp.nanos = millis * 1_000_000
        reply: ingest_pb2.PublishResponse = await self.ingest.Publish(request, timeout=5)
        return reply

    async def replay(self, series: str, resolution: str = "raw", count: int = 0) -> list[timeseries_pb2.Point]:
        """Everything held for ``series`` after sequence 0, read until ``count`` points came (or 1 s of quiet)."""
        request = timeseries_pb2.SubscribeRequest(series=[series], resolution=resolution, after_sequence=1)
        call = self.series.Subscribe(request)
        points: list[timeseries_pb2.Point] = []
        try:
            while count == 0 or len(points) < count:
                try:
                    async with asyncio.timeout(1.0):
                        message = await call.read()
                except TimeoutError:
                    break
                if message is grpc.aio.EOF:
                    break
                points.extend(message.points)
        finally:
            call.cancel()
        return points

    async def status(self, service: str) -> int:
        reply = await self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return int(reply.status)


@pytest.fixture
async def replicas(redis_server: RedisServer, start_generator: StartGenerator) -> AsyncIterator[Any]:
    """Start generator apps sharing ``redis_server``; channels closed at the end."""
    channels: list[grpc.aio.Channel] = []

    async def start(**overrides: Any) -> Replica:
        values: dict[str, Any] = {
            "history_url": redis_server.url,
            "ingest_close_delay": "300ms",
            "history_timeout": "500ms",
        }
        values.update(overrides)
        app = await start_generator(**values)
        channel = grpc.aio.insecure_channel(app.address)
        channels.append(channel)
        return Replica(app, channel)

    yield start
    for channel in channels:
        await channel.close()


def shape(points: list[timeseries_pb2.Point]) -> list[tuple[Any, ...]]:
    """What must be identical on every replica: sequence, link, value and the bucket fields."""
    return [(p.sequence, p.previous_sequence, p.value, p.min, p.max, p.count) for p in points]


async def test_a_point_published_to_one_replica_is_served_by_the_other_with_the_same_sequence(replicas: Any) -> None:
    a, b = await replicas(), await replicas()
    t0 = now_ms() - 5_000
    reply = await a.publish(*[("orders", float(i), t0 + 100 * i) for i in range(20)])
    assert reply.accepted == 20
    from_b = await b.replay("orders", count=20)
    from_a = await a.replay("orders", count=20)
    assert [p.sequence for p in from_b] == [t0 + 100 * i for i in range(20)]
    assert shape(from_b) == shape(from_a)
    listed = await b.series.ListSeries(timeseries_pb2.ListSeriesRequest())
    assert "orders" in [info.name for info in listed.series if info.origin == "published"]


async def test_a_replica_started_later_loads_a_history_longer_than_one_page_of_many_series(replicas: Any) -> None:
    a = await replicas()
    t0 = now_ms() - 20_000
    await a.publish(*[("long", float(i), t0 + i) for i in range(5_000)])  # LOAD_COUNT is 2,000
    await a.publish(*[(f"many.{i}", 1.0, t0) for i in range(40)])  # more keys than one pipelined load
    late = await replicas()
    timeline = late.app.hub.published.timeline("long")
    assert timeline is not None and len(timeline) == 5_000 and timeline.newest == t0 + 4_999
    assert all(f"many.{i}" in late.app.hub.published for i in range(40))
    assert shape(await late.replay("long", count=5_000)) == shape(await a.replay("long", count=5_000))


async def test_live_points_published_to_either_replica_reach_the_subscribers_of_both_identically(
    replicas: Any,
) -> None:
    a, b = await replicas(), await replicas()
    await a.publish(("mixed", 0.0, now_ms() - 1_000))
    await wait_until(lambda: "mixed" in b.app.hub.published, timeout=5, what="the series on b")
    calls = [r.series.Subscribe(timeseries_pb2.SubscribeRequest(series=["mixed"])) for r in (a, b)]
    await asyncio.sleep(0.2)  # both streams registered live
    sent = []
    for i in range(1, 21):
        t = now_ms()
        await (a if i % 2 else b).publish(("mixed", float(i), t))
        sent.append(t)
        await asyncio.sleep(0.01)
    got = []
    for call in calls:
        messages = await read_until(call, lambda m: m.points[-1].sequence >= sent[-1], timeout=10)
        got.append(points_by_series(messages)["mixed"])
        call.cancel()
    assert [p.sequence for p in got[0]] == sent
    assert shape(got[0]) == shape(got[1])


async def test_what_an_otlp_producer_says_about_a_series_reaches_every_replica_and_a_later_one(replicas: Any) -> None:
    a, b = await replicas(), await replicas()
    batch = {"otlp.latency": SeriesPoints([now_ms() - 1_000], [12.5])}
    await a.app.hub.published.append(batch, now_ms(), {"otlp.latency": ("ms", "Checkout latency")})
    for replica in (b, await replicas()):
        await wait_until(
            lambda r=replica: r.app.hub.published.meta("otlp.latency").unit == "ms", timeout=5, what="the unit"
        )
        listed = await replica.series.ListSeries(timeseries_pb2.ListSeriesRequest())
        (info,) = [entry for entry in listed.series if entry.name == "otlp.latency"]
        assert (info.unit, info.description, info.origin) == ("ms", "Checkout latency", "published")


async def test_duplicates_and_out_of_order_points_follow_the_store_rules_through_redis(replicas: Any) -> None:
    a, b = await replicas(), await replicas()
    t0 = now_ms() - 10_000
    first = await a.publish(("dup", 1.0, t0 + 100), ("dup", 3.0, t0 + 300))
    assert (first.accepted, first.duplicates, first.rejected_out_of_order) == (2, 0, 0)
    again = await b.publish(("dup", 9.0, t0 + 100), ("dup", 2.0, t0 + 200), ("dup", 4.0, t0 + 400), ("dup", 4.5, None))
    assert (again.accepted, again.duplicates, again.rejected_out_of_order) == (2, 1, 1)
    points = await a.replay("dup", count=4)
    assert [p.value for p in points] == [1.0, 3.0, 4.0, 4.5]  # the first value of a duplicate stays
    assert points[3].sequence > t0 + 400


async def test_buckets_closed_by_the_clock_and_late_points_are_the_same_on_every_replica_and_in_replay(
    replicas: Any,
) -> None:
    a, b = await replicas(), await replicas()
    second = (now_ms() // 1000 - 20) * 1000
    await a.publish(*[("late", float(i), second + 100 * i) for i in range(5)])
    # Quiet: the clock closes the 1s bucket (close delay 300 ms); a seal entry goes into the stream.
    await wait_until(
        lambda: _sealed(a, "late", second + 1000) and _sealed(b, "late", second + 1000),
        timeout=10,
        what="the 1s bucket sealed on both replicas",
    )
    late = await b.publish(("late", 50.0, second + 700), ("late", 60.0, second + 1200))
    assert (late.accepted, late.rejected_out_of_order) == (2, 0)
    c = await replicas()  # started after the fact: replays from Redis alone
    for replica in (a, b, c):
        await wait_until(lambda r=replica: _newest(r, "late") == second + 1200, timeout=5, what="the late points")
    buckets = [await replica.replay("late", "1s", count=1) for replica in (a, b, c)]
    assert buckets[0] and buckets[0][0].count == 5 and buckets[0][0].max == 4.0  # the late 50.0 left out
    assert shape(buckets[0]) == shape(buckets[1]) == shape(buckets[2])
    raw = [shape(await replica.replay("late", count=7)) for replica in (a, b, c)]
    assert raw[0] == raw[1] == raw[2] and len(raw[0]) == 7


def _sealed(replica: Replica, name: str, through: int) -> bool:
    timeline = replica.app.hub.published.timeline(name)
    return timeline is not None and timeline.closed_through[0] >= through


def _newest(replica: Replica, name: str) -> int:
    timeline = replica.app.hub.published.timeline(name)
    return timeline.newest if timeline is not None else 0


async def test_while_redis_is_down_publish_is_unavailable_ingest_health_not_serving_and_subscribe_serves(
    replicas: Any, redis_server: RedisServer
) -> None:
    a = await replicas()
    t0 = now_ms() - 3_000
    await a.publish(*[("outage", float(i), t0 + 10 * i) for i in range(10)])
    await wait_until(lambda: _newest(a, "outage") == t0 + 90, timeout=5, what="the points mirrored")
    redis_server.kill()
    await wait_until(lambda: not a.app.shared.up, timeout=10, what="the outage noticed")  # type: ignore[union-attr]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await a.publish(("outage", 99.0, now_ms()))
    refusal = refusal_of(refused.value)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE and refusal is not None
    assert refusal.reason == Reason.HISTORY_UNAVAILABLE and refusal.metadata["backend"] == "redis"
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert await a.status("pulsestream.v1.IngestService") == not_serving
    assert await a.status("") == serving and await a.status("pulsestream.v1.TimeSeriesService") == serving
    assert len(await a.replay("outage", count=10)) == 10  # the mirror serves what it has
    metrics = a.app.metrics.registry
    assert metrics.get_sample_value("pulsestream_generator_history_up") == 0.0
    redis_server.start()  # empty (no persistence): the follower goes on from its last ids
    await wait_until(lambda: a.status("pulsestream.v1.IngestService"), timeout=15, what="ingest SERVING again")
    reply = await a.publish(("outage", 100.0, now_ms()))
    assert reply.accepted == 1
    await wait_until(lambda: len(a.app.hub.published.timeline("outage") or ()) == 11, timeout=5, what="mirrored")
    assert metrics.get_sample_value("pulsestream_generator_history_up") == 1.0


async def test_a_password_file_authenticates_and_the_password_is_never_logged(
    tmp_path: Path, start_generator: StartGenerator, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-pass-71a"
    async with contextlib.AsyncExitStack() as stack:
        server = stack.enter_context(RedisServer(tmp_path / "auth", password=secret))
        password_file = tmp_path / "password"
        password_file.write_text(secret + "\n")
        url = f"redis://:wrong-in-url@127.0.0.1:{server.port}/0"
        caplog.set_level(logging.DEBUG)
        journal = tmp_path / "journal"
        app = await start_generator(
            history_url=url, history_password_file=str(password_file), ingest_journal_dir=str(journal)
        )
        stack.push_async_callback(app.stop)  # before the server stops
        assert app.shared is not None and app.shared.up
        async with grpc.aio.insecure_channel(app.address) as channel:
            replica = Replica(app, channel)
            assert (await replica.publish(("auth", 1.0, now_ms()))).accepted == 1
        logged = [" ".join(str(value) for value in vars(record).values()) for record in caplog.records]
        assert not [line for line in logged if secret in line or "wrong-in-url" in line]
        assert any(f"redis://:<redacted>@127.0.0.1:{server.port}/0" in line for line in logged)
        assert "GENERATOR_INGEST_JOURNAL_DIR is not used" in caplog.text and not journal.exists()
        client = aioredis.Redis(port=server.port, password=secret)
        assert await client.exists("{pulsestream}:p:auth") == 1
        await client.aclose()


def test_a_url_is_logged_without_its_password_and_only_redis_urls_are_taken() -> None:
    assert redisclient.redacted("redis://:pw@h:6379/0") == "redis://:<redacted>@h:6379/0"
    assert redisclient.redacted("rediss://user:pw@h/1") == "rediss://user:<redacted>@h/1"
    assert redisclient.redacted("redis://h:6379/0") == "redis://h:6379/0"
    with pytest.raises(ValueError, match="redis://"):
        GeneratorSettings.model_validate({"history_url": "http://h"})


async def test_rediss_verifies_the_server_against_the_ca_file_and_refuses_another_ca(
    tmp_path: Path, start_generator: StartGenerator
) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    require_openssl()
    authority(pki, "ca")
    authority(pki, "other-ca")
    signed(pki, "server", "ca", "serverAuth")
    async with contextlib.AsyncExitStack() as stack:
        server = stack.enter_context(RedisServer(tmp_path / "tls", tls=(pki / "server.crt", pki / "server.key")))
        assert server.url.startswith("rediss://")
        good = await start_generator(history_url=server.url, history_tls_ca_file=str(pki / "ca.crt"))
        stack.push_async_callback(good.stop)
        bad = await start_generator(
            history_url=server.url, history_tls_ca_file=str(pki / "other-ca.crt"), history_timeout="500ms"
        )
        stack.push_async_callback(bad.stop)
        assert good.shared is not None and good.shared.up
        assert bad.shared is not None and not bad.shared.up  # the certificate is not one its CA signed
        for app, accepted in ((good, True), (bad, False)):
            async with grpc.aio.insecure_channel(app.address) as channel:
                replica = Replica(app, channel)
                if accepted:
                    assert (await replica.publish(("tls", 1.0, now_ms()))).accepted == 1
                else:
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await replica.publish(("tls", 1.0, now_ms()))
                    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
