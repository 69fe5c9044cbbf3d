"""IngestService/Publish against a real generator on loopback: a published series is served like a synthetic one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from generator_streams import StartGenerator, assert_continuous, points_by_series, read_until
from pulsestream_generator.server import GeneratorApp

from pulsestream.refusals import Reason, Refusal, refusal_of, retry_after_of
from pulsestream.spec import PublishedSeries, StreamSpec
from pulsestream.v1 import ingest_pb2, ingest_pb2_grpc, timeseries_pb2, timeseries_pb2_grpc

TOKEN = "ingest-test-token-7f3a"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def point(series: str, value: float, t: int | None = None) -> ingest_pb2.PublishPoint:
    published = ingest_pb2.PublishPoint(series=series, value=value)
    if t is not None:
        published.timestamp.seconds, millis = divmod(t, 1000)
        published.timestamp.nanos = millis * 1_000_000
    return published


def stamp(t: int) -> Any:
    request = timeseries_pb2.SubscribeRequest()
    request.start_time.seconds, millis = divmod(t, 1000)
    request.start_time.nanos = millis * 1_000_000
    return request.start_time


class Client:
    """Stubs for one generator over one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        self.series = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)

    async def publish(self, *points: ingest_pb2.PublishPoint, **kwargs: Any) -> ingest_pb2.PublishResponse:
        reply: ingest_pb2.PublishResponse = await self.ingest.Publish(
            ingest_pb2.PublishRequest(points=points), **kwargs
        )
        return reply

    async def listed(self) -> dict[str, timeseries_pb2.SeriesInfo]:
        reply = await self.series.ListSeries(timeseries_pb2.ListSeriesRequest())
        return {info.name: info for info in reply.series}


@pytest.fixture
async def connect() -> AsyncIterator[Any]:
    channels: list[grpc.aio.Channel] = []

    def open_(app: GeneratorApp) -> Client:
        channel = grpc.aio.insecure_channel(app.address)
        channels.append(channel)
        return Client(channel)

    yield open_
    for channel in channels:
        await channel.close()


async def refused(call: Any) -> tuple[grpc.aio.AioRpcError, Refusal | None]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value, refusal_of(caught.value)


async def test_a_declared_series_is_listed_with_its_metadata_before_its_first_point(
    start_generator: StartGenerator, connect: Any
) -> None:
    declared = '[{"name": "orders", "unit": "orders/min", "description": "Orders placed", "expectedRange": [0, 500]}]'
    app = await start_generator(published=declared)
    client = connect(app)
    listed = await client.listed()
    assert list(listed)[:4] == ["cpu", "memory", "requests", "latency"]
    orders = listed["orders"]
    assert (orders.unit, orders.description, orders.expected_min, orders.expected_max) == (
        "orders/min",
        "Orders placed",
        0.0,
        500.0,
    )
    assert orders.origin == "published" and listed["cpu"].origin == "synthetic" and orders.shape == ""
    call = client.series.Subscribe(
        timeseries_pb2.SubscribeRequest(series=["orders"], start_time=stamp(now_ms() - 5000))
    )
    await client.publish(point("orders", 3.0))
    message = await asyncio.wait_for(call.read(), 5)
    assert [p.value for p in message.points] == [3.0]  # nothing before: the stream waited for the first point
    call.cancel()
    reply = await client.publish(point("created.by.writing", 1.0))
    assert reply.accepted == 1
    assert (await client.listed())["created.by.writing"].origin == "published"


async def test_a_published_series_replays_by_time_and_sequence_with_links_and_aggregates(
    generator: GeneratorApp, connect: Any
) -> None:
    client = connect(generator)
    base = now_ms() - 10_000
    base -= base % 1000
    reply = await client.publish(*[point("orders", float(i), base + i * 250) for i in range(20)])
    assert (reply.accepted, reply.duplicates, reply.rejected_out_of_order) == (20, 0, 0)
    again = await client.publish(*[point("orders", 99.0, base + i * 250) for i in range(5)], point("orders", 1.0, base))
    assert (again.accepted, again.duplicates) == (0, 6)  # a retry stores nothing twice

    by_time = client.series.Subscribe(timeseries_pb2.SubscribeRequest(series=["orders"], start_time=stamp(base + 1000)))
    raw = (await by_time.read()).points
    assert [p.sequence for p in raw] == [base + i * 250 for i in range(4, 20)]
    assert raw[0].previous_sequence == base + 750
    assert_continuous(list(raw))
    by_time.cancel()

    resumed = client.series.Subscribe(timeseries_pb2.SubscribeRequest(series=["orders"], after_sequence=base + 4000))
    assert [p.value for p in (await resumed.read()).points] == [float(i) for i in range(17, 20)]
    resumed.cancel()

    seconds = client.series.Subscribe(
        timeseries_pb2.SubscribeRequest(series=["orders"], resolution="1s", start_time=stamp(base))
    )
    buckets = (await seconds.read()).points
    # The last bucket [base+4000, +5000) is still open: the newest point is in it.
    assert [(p.sequence, p.count, p.mean) for p in buckets] == [(base + k * 1000, 4, 4 * k + 1.5) for k in range(4)]
    assert [p.previous_sequence for p in buckets] == [0, base, base + 1000, base + 2000]
    await client.publish(point("orders", 50.0, base + 6000))  # closes [base+4000, +5000) by data: live, at once
    live = await asyncio.wait_for(seconds.read(), 5)
    assert [(p.sequence, p.count, p.previous_sequence) for p in live.points] == [(base + 4000, 4, base + 3000)]
    seconds.cancel()


async def test_a_published_point_reaches_a_live_subscriber_at_once_not_at_the_next_tick(
    start_generator: StartGenerator, connect: Any
) -> None:
    app = await start_generator(frequency="1s")
    client = connect(app)
    await client.publish(point("orders", 0.0))
    call = client.series.Subscribe(timeseries_pb2.SubscribeRequest(series=["orders"]))
    await asyncio.sleep(0.2)  # let it register (live only)
    delays = []
    for i in range(5):
        sent = time.monotonic()
        await client.publish(point("orders", float(i + 1)))
        message = await asyncio.wait_for(call.read(), 5)
        delays.append(time.monotonic() - sent)
        assert [p.value for p in message.points] == [float(i + 1)]
    call.cancel()
    assert sorted(delays)[2] < 0.3, delays  # waiting for the next tick would take 0.5 s on average


async def test_a_stream_of_synthetic_and_published_series_has_no_gap_and_no_duplicate_across_the_seam(
    generator: GeneratorApp, connect: Any
) -> None:
    client = connect(generator)
    start = now_ms() - 3000
    await client.publish(*[point("orders", float(i), start + i * 10) for i in range(200)])
    stop = asyncio.Event()

    async def keep_publishing() -> int:
        sent = 0
        while not stop.is_set():
            await client.publish(point("orders", float(sent)), point("checkout.latency", float(sent)))
            sent += 1
            await asyncio.sleep(0.005)
        return sent

    publisher = asyncio.create_task(keep_publishing())
    await asyncio.sleep(0.2)
    call = client.series.Subscribe(
        timeseries_pb2.SubscribeRequest(series=["cpu", "orders", "checkout.latency"], start_time=stamp(start))
    )
    end = now_ms() + 1500
    messages = await read_until(call, lambda m: any(p.series == "cpu" and p.sequence >= end for p in m.points))
    stop.set()
    sent = await publisher
    call.cancel()
    by_series = points_by_series(messages)
    assert_continuous(by_series["cpu"], 50)
    assert_continuous(by_series["orders"])
    assert_continuous(by_series["checkout.latency"])
    assert len(by_series["orders"]) >= 200 + sent // 2
    assert by_series["orders"][0].sequence == start


async def test_a_quiet_series_gets_its_last_bucket_from_the_clock_after_the_close_delay(
    start_generator: StartGenerator, connect: Any
) -> None:
    app = await start_generator(ingest_close_delay="200ms")
    client = connect(app)
    await client.publish(point("quiet", 1.0), point("quiet", 3.0))  # created now; nothing comes after
    sent = time.monotonic()
    call = client.series.Subscribe(timeseries_pb2.SubscribeRequest(series=["quiet"], resolution="1s"))
    message = await asyncio.wait_for(call.read(), 5)
    waited = time.monotonic() - sent
    assert [(p.count, p.mean, p.min, p.max) for p in message.points] == [(2, 2.0, 1.0, 3.0)]
    assert 0.15 < waited < 3.0, waited  # the bucket's end (< 1 s away) plus the 200 ms delay (and a loaded CI)
    call.cancel()


@pytest.mark.parametrize(
    ("points", "reason", "metadata"),
    [
        (
            [point("orders", 1.0), point("orders", float("nan"))],
            Reason.BAD_POINT,
            {"index": "1", "series": "orders", "field": "value"},
        ),
        ([point("orders", 1.0), point("cpu", 1.0)], Reason.SYNTHETIC_SERIES, {"index": "1", "series": "cpu"}),
        ([point("a b", 1.0)], Reason.BAD_POINT, {"index": "0", "series": "a b", "field": "series"}),
    ],
    ids=["nan", "synthetic", "bad-name"],
)
async def test_a_bad_point_gets_invalid_argument_naming_it_and_nothing_of_the_batch_is_stored(
    generator: GeneratorApp,
    connect: Any,
    points: list[ingest_pb2.PublishPoint],
    reason: Reason,
    metadata: dict[str, str],
) -> None:
    client = connect(generator)
    error, refusal = await refused(client.publish(*points))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refusal == Refusal(reason, metadata)
    assert error.details().startswith(f"points[{metadata['index']}]")
    assert "orders" not in await client.listed()


async def test_timestamps_too_far_ahead_or_older_than_retention_are_refused_with_the_bound(
    generator: GeneratorApp, connect: Any
) -> None:
    client = connect(generator)
    _error, refusal = await refused(client.publish(point("orders", 1.0, now_ms() + 120_000)))
    assert refusal is not None and refusal.reason == Reason.BAD_POINT and refusal.metadata["field"] == "timestamp"
    assert abs(int(refusal.metadata["now"]) - now_ms()) < 5000
    _error, refusal = await refused(client.publish(point("orders", 1.0, now_ms() - 31_000)))  # retention 30s
    assert refusal is not None and refusal.reason == Reason.BAD_POINT
    assert abs(int(refusal.metadata["retained_from"]) - (now_ms() - 30_000)) < 5000


async def test_limits_give_resource_exhausted_with_their_reason(start_generator: StartGenerator, connect: Any) -> None:
    app = await start_generator(ingest_max_points_per_request=3, ingest_max_series=2)
    client = connect(app)
    error, refusal = await refused(client.publish(*[point("a", float(i)) for i in range(4)]))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal == Refusal(Reason.TOO_MANY_POINTS, {"max_points": "3"})
    await client.publish(point("a", 1.0), point("b", 1.0))
    error, refusal = await refused(client.publish(point("a", 2.0), point("c", 1.0)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal == Refusal(Reason.TOO_MANY_SERIES, {"index": "1", "series": "c", "max_series": "2"})
    assert (await client.publish(point("a", 3.0))).accepted == 1


async def test_undeclared_series_can_be_refused(start_generator: StartGenerator, connect: Any) -> None:
    app = await start_generator(ingest_undeclared="refuse", published='[{"name": "orders"}]')
    client = connect(app)
    assert (await client.publish(point("orders", 1.0))).accepted == 1
    error, refusal = await refused(client.publish(point("orders", 2.0), point("other", 1.0)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refusal == Refusal(Reason.UNDECLARED_SERIES, {"index": "1", "series": "other"})


@pytest.mark.fault
async def test_a_producer_faster_than_the_hub_is_slowed_with_retry_info_and_loses_nothing_by_retrying(
    start_generator: StartGenerator, connect: Any
) -> None:
    app = await start_generator(ingest_max_in_flight=2)
    client = connect(app)
    store = app.hub.published
    fast = store.append

    async def slow_append(batch: Any, now: int) -> Any:  # a store that waits on its server, as a shared one does
        await asyncio.sleep(0.02)
        return await fast(batch, now)

    store.append = slow_append  # type: ignore[method-assign]
    lanes, batches, size = 12, 5, 1000
    base = now_ms() - 20_000
    busy: list[float] = []

    def lane(number: int) -> None:
        """One series' batches in order, as a producer sends them; from its own thread, so calls really overlap."""
        with grpc.insecure_channel(app.address) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            for batch in range(batches):
                first = base + batch * size
                request = ingest_pb2.PublishRequest(
                    points=[point(f"load{number}", float(i), first + i) for i in range(size)]
                )
                while True:
                    try:
                        stub.Publish(request, timeout=30)
                        break
                    except grpc.RpcError as error:
                        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                        refusal = refusal_of(error)
                        assert refusal is not None and refusal.reason == Reason.INGEST_BUSY
                        assert refusal.metadata["max_in_flight"] == "2"
                        delay = retry_after_of(error)
                        assert delay is not None and 0.01 <= delay <= 1.0
                        busy.append(delay)
                        time.sleep(delay)

    await asyncio.gather(*(asyncio.to_thread(lane, number) for number in range(lanes)))
    assert busy, f"{lanes} concurrent producers against 2 batches in flight were never told to slow down"
    call = client.series.Subscribe(
        timeseries_pb2.SubscribeRequest(series=[f"load{i}" for i in range(lanes)], start_time=stamp(base))
    )
    messages: list[timeseries_pb2.SubscribeResponse] = []
    while sum(len(m.points) for m in messages) < lanes * batches * size:
        messages.append(await asyncio.wait_for(call.read(), 5))
    call.cancel()
    for points in points_by_series(messages).values():
        assert len(points) == batches * size
        assert_continuous(points, 1)


async def test_tokens_guard_publishing_and_never_reach_the_log(
    start_generator: StartGenerator, connect: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = await start_generator(ingest_tokens=["another-token", TOKEN])
    client = connect(app)
    error, refusal = await refused(client.publish(point("orders", 1.0)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and refusal == Refusal(Reason.TOKEN_REQUIRED, {})
    error, refusal = await refused(client.publish(point("orders", 1.0), metadata=(("authorization", "Bearer nope"),)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and refusal == Refusal(Reason.TOKEN_INVALID, {})
    reply = await client.publish(point("orders", 1.0), metadata=(("authorization", f"Bearer {TOKEN}"),))
    assert reply.accepted == 1
    assert (await client.listed())["orders"].origin == "published"  # reading stays open
    logging.getLogger("test").warning("a library logged authorization: Bearer %s", TOKEN)
    handler_output = "\n".join(caplog.handler.format(record) for record in caplog.records)
    assert TOKEN not in handler_output


@pytest.mark.fault
async def test_draining_refuses_new_batches_with_unavailable(generator: GeneratorApp, connect: Any) -> None:
    client = connect(generator)
    await generator.drain()
    error, refusal = await refused(client.publish(point("orders", 1.0)))
    assert error.code() == grpc.StatusCode.UNAVAILABLE and refusal is not None
    assert refusal.reason == Reason.SERVER_DRAINING


async def test_live_declarations_list_new_series_and_end_the_streams_of_removed_empty_ones(
    generator: GeneratorApp, connect: Any
) -> None:
    client = connect(generator)
    hub = generator.hub
    hub.apply(StreamSpec(series=list(hub.spec.series), published=[PublishedSeries(name="later", unit="ms")]))
    assert (await client.listed())["later"].unit == "ms"
    call = client.series.Subscribe(timeseries_pb2.SubscribeRequest(series=["later"]))
    await asyncio.sleep(0.1)
    hub.apply(StreamSpec(series=list(hub.spec.series)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call.read(), 5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "later" not in await client.listed()


@pytest.mark.fault
async def test_a_mixed_stream_cut_while_draining_resumes_from_its_smallest_position_without_a_gap(
    generator: GeneratorApp, connect: Any
) -> None:
    client = connect(generator)
    quiet = now_ms() - 2000
    await client.publish(point("orders", 1.0, quiet))
    call = client.series.Subscribe(timeseries_pb2.SubscribeRequest(series=["cpu", "orders"], start_time=stamp(quiet)))
    await read_until(call, lambda m: any(p.series == "cpu" and p.sequence > quiet + 1500 for p in m.points))
    await generator.drain()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while True:
            await asyncio.wait_for(call.read(), 5)
    refusal = refusal_of(caught.value)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and refusal is not None
    assert refusal.sequence("after_sequence") == quiet  # orders has not moved since: the stream resumes from there
