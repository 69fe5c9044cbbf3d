"""Fan-out: a slow subscriber is cut with RESOURCE_EXHAUSTED and never holds back a fast one."""

from __future__ import annotations

import asyncio
import re
import time

import grpc
import pytest
from generator_streams import StartGenerator, assert_continuous, now_ms, points_by_series
from pulsestream_generator.server import GeneratorApp

from pulsestream.refusals import Reason, refusal_of
from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc

pytestmark = pytest.mark.fault

SERIES = [f"s{i:02d}" for i in range(40)]  # big messages fill the slow client's transport window quickly
BUFFER = 8


def overflows(app: GeneratorApp) -> float:
    return app.metrics.registry.get_sample_value("pulsestream_generator_subscriber_overflows_total") or 0.0


async def test_a_slow_subscriber_is_cut_with_a_resume_cursor_while_a_fast_one_keeps_pace(
    start_generator: StartGenerator,
) -> None:
    app = await start_generator(frequency="10ms", retention="10s", buffer_size=BUFFER, series=SERIES)
    request = timeseries_pb2.SubscribeRequest(series=SERIES)
    # BDP probing would grow the slow client's receive window; keep HTTP/2 flow control tight.
    options = [("grpc.http2.bdp_probe", 0)]
    async with (
        grpc.aio.insecure_channel(app.address, options=options) as slow_channel,
        grpc.aio.insecure_channel(app.address) as fast_channel,
    ):
        slow = timeseries_pb2_grpc.TimeSeriesServiceStub(slow_channel).Subscribe(request)
        fast = timeseries_pb2_grpc.TimeSeriesServiceStub(fast_channel).Subscribe(request)
        first_slow = await slow.read()  # then the slow client stops reading

        fast_messages: list[timeseries_pb2.SubscribeResponse] = []
        worst_lag = 0
        fills: list[float] = []
        deadline = time.monotonic() + 15
        async with asyncio.timeout(20):
            while overflows(app) == 0 or len(fast_messages) < 100:
                assert time.monotonic() < deadline, "the slow subscriber never overflowed"
                message = await fast.read()
                fast_messages.append(message)
                worst_lag = max(worst_lag, now_ms() - message.points[0].sequence)
                fills.append(app.hub.buffer_fill())
        fast.cancel()

        # The fast subscriber saw every tick, promptly, while the slow one was stuck.
        for points in points_by_series(fast_messages).values():
            assert_continuous(points, 10)
        assert worst_lag < 1_000, f"fast subscriber lagged {worst_lag} ms behind the ticks"
        # Memory stayed bounded: no queue ever held more than the buffer.
        assert max(fills) <= 1.0
        assert overflows(app) == 1

        # The slow subscriber reads what was already on its way, then gets the documented status.
        received = [first_slow]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with asyncio.timeout(10):
                while True:
                    received.append(await slow.read())
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = caught.value.details()
        assert f"more than {BUFFER} messages behind" in details
        match = re.search(r"after_sequence=(\d+)", details)
        assert match, details
        cursor = int(match.group(1))
        assert cursor == received[-1].points[0].sequence, "the cursor is the last point the client got"
        # The same facts as data, for programs (the streamer): reason and cursor, no parsing.
        refusal = refusal_of(caught.value)
        assert refusal is not None and refusal.reason == Reason.SUBSCRIBER_TOO_SLOW
        assert refusal.metadata == {"after_sequence": str(cursor), "buffer_size": str(BUFFER)}

        # Resuming from that cursor continues without a gap (from the history ring).
        resumed = timeseries_pb2_grpc.TimeSeriesServiceStub(fast_channel).Subscribe(
            timeseries_pb2.SubscribeRequest(series=SERIES[:2], after_sequence=cursor)
        )
        message = await resumed.read()
        resumed.cancel()
        assert message.points[0].sequence == cursor + 10
        assert message.points[0].previous_sequence == cursor
    # The cut subscriber's queue is gone.
    assert app.hub.buffer_fill() == 0.0
