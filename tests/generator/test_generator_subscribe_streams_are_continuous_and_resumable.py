"""Subscribe against a real server: continuity, replay, resume, aggregation, determinism, errors."""

from __future__ import annotations

import grpc
import pytest
from generator_streams import (
    StartGenerator,
    assert_continuous,
    now_ms,
    points_by_series,
    read_messages,
    read_until,
)
from google.protobuf.timestamp_pb2 import Timestamp
from pulsestream_generator.server import GeneratorApp
from pulsestream_generator.source import Source

from pulsestream.refusals import refusal_of
from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc

Request = timeseries_pb2.SubscribeRequest


def ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=ms % 1000 * 1_000_000)


@pytest.mark.parametrize(("frequency", "period", "count"), [("10ms", 10, 60), ("50ms", 50, 16), ("250ms", 250, 5)])
async def test_live_stream_is_continuous_and_evenly_spaced_at_several_frequencies(
    start_generator: StartGenerator, frequency: str, period: int, count: int
) -> None:
    app = await start_generator(frequency=frequency)
    async with grpc.aio.insecure_channel(app.address) as channel:
        call = timeseries_pb2_grpc.TimeSeriesServiceStub(channel).Subscribe(Request(series=["cpu", "latency"]))
        messages = await read_messages(call, count)
        call.cancel()
    source = Source(42)
    for message in messages:
        # one message per tick, all requested series in it, sharing the tick's sequence
        assert [p.series for p in message.points] == ["cpu", "latency"]
        assert len({p.sequence for p in message.points}) == 1
    for name, points in points_by_series(messages).items():
        assert_continuous(points, period)
        for point in points:
            assert point.sequence % period == 0, "ticks sit on wall-clock multiples of the period"
            assert point.timestamp.ToMilliseconds() == point.sequence
            assert point.value == source.value(name, point.sequence)
            assert point.count == 0


async def test_start_time_in_the_past_replays_then_goes_live_without_gap_or_duplicate(
    generator: GeneratorApp, stub: timeseries_pb2_grpc.TimeSeriesServiceStub
) -> None:
    start = now_ms() - 3_000
    call = stub.Subscribe(Request(series=["cpu", "memory"], start_time=ts(start)))
    subscribed_at = now_ms()
    messages = await read_until(call, lambda m: m.points[0].sequence > subscribed_at + 300)
    call.cancel()
    assert len(messages[0].points) > 2 * 10, "history should come batched"
    for points in points_by_series(messages).values():
        assert points[0].sequence == -(-start // 50) * 50, "replay starts at the first tick at or after start_time"
        assert_continuous(points, 50)
        assert points[-1].sequence > subscribed_at, "the stream went on live"


async def test_after_sequence_resumes_with_exactly_the_next_point(
    generator: GeneratorApp, stub: timeseries_pb2_grpc.TimeSeriesServiceStub
) -> None:
    first = stub.Subscribe(Request(series=["requests"]))
    seen = await read_messages(first, 3)
    first.cancel()
    last = seen[-1].points[0].sequence
    # meanwhile more points are produced; the resume must include them all
    other = stub.Subscribe(Request(series=["memory"]))
    await read_messages(other, 4)
    other.cancel()
    resumed = stub.Subscribe(Request(series=["requests"], after_sequence=last))
    resumed_at = now_ms()
    messages = await read_until(resumed, lambda m: m.points[-1].sequence > resumed_at)
    resumed.cancel()
    points = points_by_series(messages)["requests"]
    assert points[0].sequence == last + 50
    assert points[0].previous_sequence == last
    assert_continuous(points, 50)
    # a cursor between ticks resumes at the next tick
    between = stub.Subscribe(Request(series=["requests"], after_sequence=last - 1))
    (message,) = await read_messages(between, 1)
    between.cancel()
    assert message.points[0].sequence == last


async def test_aggregated_buckets_match_a_direct_computation_and_align_to_the_wall_clock(
    generator: GeneratorApp, stub: timeseries_pb2_grpc.TimeSeriesServiceStub
) -> None:
    source = Source(42)
    start = now_ms() - 4_500
    call = stub.Subscribe(Request(series=["cpu", "requests"], resolution="1s", start_time=ts(start)))
    subscribed_at = now_ms()
    messages = await read_until(call, lambda m: m.points[0].sequence >= subscribed_at // 1000 * 1000, 15)
    call.cancel()
    by_series = points_by_series(messages)
    for name, points in by_series.items():
        assert points[0].sequence == start // 1000 * 1000, "the bucket holding start_time comes first"
        assert_continuous(points, 1000)
        for point in points:
            assert point.sequence % 1000 == 0
            assert point.timestamp.ToMilliseconds() == point.sequence
            values = [source.value(name, t) for t in range(point.sequence, point.sequence + 1000, 50)]
            assert (point.count, point.min, point.max, point.first, point.last) == (
                20,
                min(values),
                max(values),
                values[0],
                values[-1],
            )
            assert point.mean == pytest.approx(sum(values) / 20)
            assert point.value == point.mean
    # the bucket open at subscription time came live, once closed (its end is in the past)
    assert max(p.sequence for p in by_series["cpu"]) >= subscribed_at // 1000 * 1000
    assert max(p.sequence for p in by_series["cpu"]) + 1000 <= now_ms()


async def test_five_second_and_one_minute_buckets_replay_aligned(start_generator: StartGenerator) -> None:
    app = await start_generator(frequency="100ms", retention="2m")
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)
        five = stub.Subscribe(Request(series=["memory"], resolution="5s", start_time=ts(now_ms() - 30_000)))
        (message,) = await read_messages(five, 1)
        five.cancel()
        assert len(message.points) >= 5
        assert all(p.sequence % 5000 == 0 and p.count == 50 for p in message.points)
        assert_continuous(list(message.points), 5000)
        minute = stub.Subscribe(Request(series=["memory"], resolution="1m", start_time=ts(now_ms() - 119_000)))
        (message,) = await read_messages(minute, 1)
        minute.cancel()
        assert [p.count for p in message.points][:2] == [600, 600]
        assert all(p.sequence % 60_000 == 0 for p in message.points)


async def test_two_generators_with_the_same_seed_give_identical_points(start_generator: StartGenerator) -> None:
    one = await start_generator(frequency="20ms", seed=1234)
    two = await start_generator(frequency="20ms", seed=1234)
    other = await start_generator(frequency="20ms", seed=99)
    start = now_ms() - 1_000
    results = []
    for app in (one, two, other):
        async with grpc.aio.insecure_channel(app.address) as channel:
            call = timeseries_pb2_grpc.TimeSeriesServiceStub(channel).Subscribe(
                Request(series=["cpu", "latency", "memory"], start_time=ts(start))
            )
            (message,) = await read_messages(call, 1)
            call.cancel()
            results.append({(p.series, p.sequence): (p.value, p.previous_sequence) for p in message.points})
    common = results[0].keys() & results[1].keys()
    assert len(common) >= 3 * 45
    assert all(results[0][key] == results[1][key] for key in common)
    assert any(results[0][key] != results[2].get(key) for key in common), "another seed should differ"


@pytest.mark.fault
async def test_a_client_resuming_after_a_generator_restart_gets_every_missed_point(
    start_generator: StartGenerator,
) -> None:
    first = await start_generator(frequency="20ms", seed=5)
    async with grpc.aio.insecure_channel(first.address) as channel:
        call = timeseries_pb2_grpc.TimeSeriesServiceStub(channel).Subscribe(Request(series=["cpu"]))
        last = (await read_messages(call, 3))[-1].points[0].sequence
        call.cancel()
    await first.stop()
    second = await start_generator(frequency="20ms", seed=5)  # a new process would backfill the same way
    async with grpc.aio.insecure_channel(second.address) as channel:
        call = timeseries_pb2_grpc.TimeSeriesServiceStub(channel).Subscribe(
            Request(series=["cpu"], after_sequence=last)
        )
        resumed_at = now_ms()
        messages = await read_until(call, lambda m: m.points[-1].sequence > resumed_at)
        call.cancel()
    points = points_by_series(messages)["cpu"]
    assert points[0].sequence == last + 20 and points[0].previous_sequence == last
    assert_continuous(points, 20)
    assert all(p.value == Source(5).value("cpu", p.sequence) for p in points)


async def test_list_series_reports_catalogue_clock_and_resolutions(
    generator: GeneratorApp, stub: timeseries_pb2_grpc.TimeSeriesServiceStub
) -> None:
    response = await stub.ListSeries(timeseries_pb2.ListSeriesRequest())
    assert [s.name for s in response.series] == ["cpu", "memory", "requests", "latency"]
    cpu = response.series[0]
    assert (cpu.unit, cpu.expected_min, cpu.expected_max, cpu.shape) == ("ratio", 0.0, 1.0, "sine+noise")
    assert response.frequency.ToMilliseconds() == 50
    assert response.retention.ToSeconds() == 30
    assert list(response.resolutions) == ["raw", "1s", "5s", "1m"]


def _invalid_requests(now: int) -> dict[str, tuple[Request, str]]:
    """Bad requests by case name; ``now`` is read when the test runs, not when pytest collects it."""
    return {
        "no series": (Request(), "series"),
        "unknown series": (Request(series=["cpu", "nope"]), "series"),
        "duplicate series": (Request(series=["cpu", "cpu"]), "series"),
        "too many series": (Request(series=[f"s{i}" for i in range(65)]), "series"),
        "unknown resolution": (Request(series=["cpu"], resolution="2s"), "resolution"),
        "start in the future": (Request(series=["cpu"], start_time=ts(now + 60_000)), "start_time"),
        "start before retention": (Request(series=["cpu"], start_time=ts(now - 31_000)), "start_time"),
        "resume before history": (Request(series=["cpu"], after_sequence=now - 3_600_000), "after_sequence"),
        "resume in the future": (Request(series=["cpu"], after_sequence=now + 3_600_000), "after_sequence"),
    }


@pytest.mark.parametrize("case", list(_invalid_requests(now_ms())))
async def test_bad_subscribe_requests_get_invalid_argument_naming_the_field(
    stub: timeseries_pb2_grpc.TimeSeriesServiceStub, case: str
) -> None:
    request_, field = _invalid_requests(now_ms())[case]
    call = stub.Subscribe(request_)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert caught.value.details().startswith(f"{field}:"), caught.value.details()
    refusal = refusal_of(caught.value)
    assert refusal is not None and refusal.metadata["field"] == field, refusal
