"""Live settings from the settings file: frequency, series and buffer size change without a reconnect."""

from __future__ import annotations

import itertools
from pathlib import Path

import grpc
import pytest
from generator_streams import StartGenerator, assert_continuous, now_ms, points_by_series, read_messages, read_until

from pulsestream.refusals import Reason, Refusal, refusal_of
from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc

Request = timeseries_pb2.SubscribeRequest


async def test_a_new_frequency_changes_point_spacing_on_open_streams(
    start_generator: StartGenerator, tmp_path: Path
) -> None:
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text("frequency: 100ms\n")
    app = await start_generator(settings_file=str(settings_file), settings_poll_interval="20ms", frequency="1s")
    assert app.hub.spec.frequency == "100ms", "the file overrides the environment at start"
    async with grpc.aio.insecure_channel(app.address) as channel:
        call = timeseries_pb2_grpc.TimeSeriesServiceStub(channel).Subscribe(Request(series=["cpu", "memory"]))
        before = await read_messages(call, 4)
        settings_file.write_text("frequency: 20ms\n")
        changed_at = now_ms()
        after = await read_until(call, lambda m: m.points[0].sequence > changed_at + 400, 10)
        call.cancel()
    for points in points_by_series(before + after).values():
        assert_continuous(points)  # increasing, linked: no gap, no duplicate across the change
        gaps = [b.sequence - a.sequence for a, b in itertools.pairwise(points)]
        assert gaps[:3] == [100, 100, 100]
        assert gaps[-10:] == [20] * 10
        # one switch: 100 ms spacing, at most one transition step, then 20 ms (each tick on a 20 ms multiple)
        switch = gaps.index(20) if gaps[3] != 20 else 3
        assert set(gaps[: switch - 1]) <= {100} and set(gaps[switch:]) == {20}, gaps
        assert all(p.sequence % 20 == 0 for p in points[switch:])
    listed = await _list(app.address)
    assert listed.frequency.ToMilliseconds() == 20


async def _list(address: str) -> timeseries_pb2.ListSeriesResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)
        response: timeseries_pb2.ListSeriesResponse = await stub.ListSeries(timeseries_pb2.ListSeriesRequest())
        return response


async def test_series_added_live_come_with_history_and_removed_ones_end_their_streams(
    start_generator: StartGenerator, tmp_path: Path
) -> None:
    settings_file = tmp_path / "settings.json"
    settings_file.write_text('{"series": ["cpu", "memory"]}')
    app = await start_generator(settings_file=str(settings_file), settings_poll_interval="20ms", frequency="50ms")
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)
        memory = stub.Subscribe(Request(series=["memory"]))
        await memory.read()
        settings_file.write_text('{"series": ["cpu", "disk"]}')
        # the stream of a removed series ends with NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await read_until(memory, lambda m: False, 10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "memory" in caught.value.details()
        assert refusal_of(caught.value) == Refusal(Reason.SERIES_REMOVED, {"series": "memory"})
        assert [s.name for s in (await _list(app.address)).series] == ["cpu", "disk"]
        # a series added live has the full history (computed), so it can be replayed at once
        start = now_ms() - 5_000
        replay = stub.Subscribe(
            Request(series=["disk"], start_time={"seconds": start // 1000, "nanos": start % 1000 * 1_000_000})
        )
        first = await replay.read()
        replay.cancel()
        points = list(first.points)
        assert points[0].sequence == -(-start // 50) * 50
        assert_continuous(points, 50)
        rejected = stub.Subscribe(Request(series=["memory"]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rejected.read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refusal_of(caught.value) == Refusal(Reason.UNKNOWN_SERIES, {"field": "series", "series": "memory"})


@pytest.mark.fault
async def test_an_invalid_settings_file_keeps_the_settings_in_force(
    start_generator: StartGenerator, tmp_path: Path
) -> None:
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text("bufferSize: 64\n")
    app = await start_generator(settings_file=str(settings_file), settings_poll_interval="20ms")
    assert app.hub.spec.buffer_size == 64
    settings_file.write_text("bufferSize: -1\nfrequency: 20ms\n")
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)
        call = stub.Subscribe(Request(series=["cpu"]))
        await read_until(call, lambda m: app.settings_file.error is not None, 10)
        call.cancel()
    assert app.hub.spec.buffer_size == 64
    assert app.hub.spec.frequency == "100ms"
