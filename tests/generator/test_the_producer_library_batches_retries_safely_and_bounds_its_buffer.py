"""The producer library (pulsestream.publish) against a real generator: batching, safe retries, overflow."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from generator_streams import StartGenerator, assert_continuous, points_by_series
from loopback import free_port, wait_until
from pulsestream_generator.intake import Busy
from pulsestream_generator.server import GeneratorApp

from pulsestream.publish import AsyncPublisher, BufferFull, Publisher, PublishError
from pulsestream.publish.buffer import Buffer
from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def stored(app: GeneratorApp, names: Sequence[str], after: int) -> dict[str, list[timeseries_pb2.Point]]:
    """Every point the generator holds for ``names`` after ``after``."""
    async with grpc.aio.insecure_channel(app.address) as channel:
        call = timeseries_pb2_grpc.TimeSeriesServiceStub(channel).Subscribe(
            timeseries_pb2.SubscribeRequest(series=list(names), after_sequence=after)
        )
        messages = []
        try:
            while True:
                messages.append(await asyncio.wait_for(call.read(), 0.5))
        except TimeoutError:
            pass
        call.cancel()
    return points_by_series(messages)


async def test_points_recorded_in_bursts_are_batched_acknowledged_and_stored_once_each(
    generator: GeneratorApp,
) -> None:
    start = now_ms() - 1
    async with AsyncPublisher(generator.address, batch_size=500, linger=0.05) as publisher:
        for i in range(3000):
            publisher.record(f"burst{i % 3}", float(i))  # 1,000 per series within a few ms: stamps nudged apart
        await publisher.flush(10)
        assert publisher.stats.accepted == 3000 and publisher.stats.duplicates == 0
        assert publisher.stats.batches >= 6
    held = await stored(generator, ["burst0", "burst1", "burst2"], start)
    for name, points in held.items():
        assert len(points) == 1000, name
        assert_continuous(points)
        assert [p.value for p in points] == [float(i) for i in range(int(name[-1]), 3000, 3)]


async def test_a_single_point_goes_out_after_the_linger_time_without_a_flush(generator: GeneratorApp) -> None:
    async with AsyncPublisher(generator.address, linger=0.05) as publisher:
        publisher.record("lonely", 1.0)
        await wait_until(lambda: publisher.stats.accepted == 1, timeout=5, what="the point to be acknowledged")


@pytest.mark.fault
async def test_a_batch_stored_but_not_acknowledged_is_resent_and_counted_as_duplicates_not_stored_twice(
    generator: GeneratorApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest = generator.ingest
    real = ingest.intake.submit
    lost = [0]

    async def store_then_lose_the_answer(job: Any) -> Any:
        done = await real(job)
        if not lost[0]:
            lost[0] += 1
            raise Busy(1, 0.05)  # the batch is stored; the producer is told to resend it
        return done

    monkeypatch.setattr(ingest.intake, "submit", store_then_lose_the_answer)
    start = now_ms() - 1
    async with AsyncPublisher(generator.address, retry_base=0.01) as publisher:
        for i in range(100):
            publisher.record("retried", float(i))
        await publisher.flush(10)
        assert (publisher.stats.accepted, publisher.stats.duplicates, publisher.stats.retries) == (0, 100, 1)
    points = (await stored(generator, ["retried"], start))["retried"]
    assert len(points) == 100
    assert_continuous(points)


@pytest.mark.fault
async def test_the_retry_delay_the_generator_asks_for_is_honoured(
    generator: GeneratorApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = generator.ingest.intake.submit
    refused_at: list[float] = []

    async def busy_twice(job: Any) -> Any:
        if len(refused_at) < 2:
            refused_at.append(time.monotonic())
            raise Busy(1, 0.3)
        refused_at.append(time.monotonic())
        return await real(job)

    monkeypatch.setattr(generator.ingest.intake, "submit", busy_twice)
    async with AsyncPublisher(generator.address, retry_base=0.001, retry_cap=0.002) as publisher:
        publisher.record("patient", 1.0)
        await publisher.flush(10)
    assert publisher.stats.accepted == 1 and publisher.stats.retries == 2
    gaps = [b - a for a, b in itertools.pairwise(refused_at)]
    assert all(gap >= 0.28 for gap in gaps), gaps  # RetryInfo's 300 ms, not the 2 ms backoff


async def test_points_the_generator_refuses_are_dropped_and_the_rest_of_the_batch_is_stored(
    start_generator: StartGenerator,
) -> None:
    app = await start_generator(ingest_max_points_per_request=20)
    old = now_ms() - 60_000  # retention is 30 s
    async with AsyncPublisher(app.address, batch_size=50) as publisher:
        for i in range(30):
            publisher.record("cpu", float(i))  # synthetic: refused
            publisher.record("kept", float(i))
            publisher.record("stale", float(i), t=old + i)  # older than the retention: refused
        await publisher.flush(10)
        assert publisher.stats.accepted == 30
        assert publisher.stats.refused == 60
        assert publisher.batch_size == 20  # split after TOO_MANY_POINTS
    assert len((await stored(app, ["kept"], 0))["kept"]) == 30


async def test_a_wrong_token_stops_publishing_and_says_so(start_generator: StartGenerator) -> None:
    app = await start_generator(ingest_tokens=["right-token"])
    publisher = AsyncPublisher(app.address, token="wrong-token")
    await publisher.start()
    publisher.record("orders", 1.0)
    with pytest.raises(PublishError, match="UNAUTHENTICATED"):
        await publisher.flush(5)
    with pytest.raises(PublishError):
        publisher.record("orders", 2.0)
    with pytest.raises(PublishError):
        await publisher.close(1)
    async with AsyncPublisher(app.address, token="right-token") as allowed:
        allowed.record("orders", 1.0)
        await allowed.flush(5)
        assert allowed.stats.accepted == 1


@pytest.mark.fault
async def test_close_against_an_unreachable_generator_gives_up_after_its_timeout_and_says_how_many_are_left() -> None:
    publisher = AsyncPublisher(f"127.0.0.1:{free_port()}", retry_base=0.01, retry_cap=0.05, timeout=0.2)
    await publisher.start()
    for i in range(5):
        publisher.record("orders", float(i))
    started = time.monotonic()
    with pytest.raises(PublishError, match="5 points not acknowledged"):
        await publisher.close(timeout=0.5)
    assert time.monotonic() - started < 3


async def test_the_buffer_is_bounded_and_its_overflow_policy_applies() -> None:
    oldest = Buffer(3, "drop-oldest")
    for i in range(5):
        assert oldest.record("a", float(i), t=i + 1)
    assert [v for _, _, v in oldest.take(10)] == [2.0, 3.0, 4.0] and oldest.dropped == 2
    newest = Buffer(3, "drop-newest")
    results = [newest.record("a", float(i), t=i + 1) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert [v for _, _, v in newest.take(10)] == [0.0, 1.0, 2.0]
    strict = Buffer(1, "error")
    strict.record("a", 1.0)
    with pytest.raises(BufferFull):
        strict.record("a", 2.0)
    flight = Buffer(2, "drop-oldest")
    flight.record("a", 1.0, t=1)
    flight.record("a", 2.0, t=2)
    assert len(flight.take(2)) == 2  # in flight: never dropped, and still counted against the bound
    assert not flight.record("a", 3.0, t=3) and flight.held == 2
    with pytest.raises(ValueError, match="finite"):
        flight.record("a", float("nan"))
    with pytest.raises(ValueError, match="breaks the rules"):
        flight.record("a,b", 1.0)


async def test_put_waits_for_room_instead_of_dropping(generator: GeneratorApp) -> None:
    async with AsyncPublisher(generator.address, max_buffer=10, batch_size=5, linger=0.01) as publisher:
        for i in range(200):
            await publisher.put("backpressure", float(i))
        await publisher.flush(10)
        assert publisher.stats.accepted == 200 and publisher.buffer.dropped == 0


async def test_the_sync_publisher_records_from_any_thread_and_flushes_on_close(generator: GeneratorApp) -> None:
    start = now_ms() - 1

    def produce() -> tuple[int, int]:
        with Publisher(generator.address, linger=0.02) as publisher:
            threads = [
                threading.Thread(target=lambda n=n: [publisher.record(f"thread{n}", float(i)) for i in range(250)])
                for n in range(4)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return publisher.stats.accepted, publisher.dropped

    assert await asyncio.to_thread(produce) == (1000, 0)
    held = await stored(generator, [f"thread{n}" for n in range(4)], start)
    assert sorted(len(points) for points in held.values()) == [250] * 4
