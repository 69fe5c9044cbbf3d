"""SIGTERM to a generator under load: every stream is told to reconnect, and nobody loses a point.

Direct gRPC subscribers and a streamer with browsers behind it, on two generator replicas: every stream
ends with UNAVAILABLE within the grace period, subscribers resume on the other replica by
``after_sequence``, and so does the streamer, so the browsers see no gap either.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time

import grpc
import pytest
from loopback import wait_until
from services import FREQUENCY_MS, Stack
from sse import EventSource, assert_continuous, following, gaps_and_duplicates

from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

PATHS = [
    "/v1/stream?series=cpu,memory&window=1s",
    "/v1/stream?series=latency&window=1s",
    "/v1/stream?series=cpu,requests,latency&window=1s&format=d3",
]


def _series(path: str) -> set[str]:
    return set(path.split("series=")[1].split("&", maxsplit=1)[0].split(","))


async def _subscribe_across(
    addresses: list[str], series: list[str], got: dict[str, list[int]], endings: list[tuple[str, float]]
) -> None:
    """A direct gRPC subscriber: on UNAVAILABLE, resume on the next address after the last sequence held."""
    after: int | None = None
    for address in itertools.cycle(addresses):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)
            request = timeseries_pb2.SubscribeRequest(series=series)
            if after is not None:
                request.after_sequence = after
            try:
                async for response in stub.Subscribe(request):
                    for point in response.points:
                        got.setdefault(point.series, []).append(point.sequence)
                        after = point.sequence if after is None else max(after, point.sequence)
            except grpc.aio.AioRpcError as error:
                endings.append((error.code().name, time.monotonic()))
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise


async def test_sigterm_under_load_drains_a_generator_and_subscribers_resume_on_the_other(stack: Stack) -> None:
    one = await stack.aio.generator()
    two = await stack.aio.generator()
    streamer = await stack.aio.streamer([one, two])
    browsers = [EventSource([streamer.url], PATHS[i % len(PATHS)]) for i in range(20)]
    subscribers: list[tuple[dict[str, list[int]], list[tuple[str, float]]]] = [({}, []) for _ in range(40)]
    tasks = [
        asyncio.create_task(_subscribe_across([one.address, two.address], ["cpu", "memory"], got, endings))
        for got, endings in subscribers
    ]
    try:
        async with following(*browsers):
            await wait_until(lambda: all(len(got) == 2 for got, _ in subscribers), what="every subscriber's points")
            for browser in browsers:
                await browser.wait_for(lambda e: e.event == "points", what="live points")
            started = time.monotonic()
            one.signal(signal.SIGTERM)
            code = await one.aio.wait_exit(15)
            drained = time.monotonic() - started
            last = max(browser.last_seq() for browser in browsers)
            for browser in browsers:
                await browser.wait_past(last + 500)
            await wait_until(
                lambda: all(min(s[-1] for s in got.values()) > last + 500 for got, _ in subscribers),
                what="subscribers to resume on the other replica",
            )
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results
    assert code in (0, -signal.SIGTERM), one.log_text()[-2000:]
    print(f"generator drained {len(subscribers)} subscribers and the streamer in {drained:.2f}s")
    assert drained < 3.0 + 2.0, f"generator drain took {drained:.1f}s; grace period is 3s"
    for got, endings in subscribers:
        assert [code for code, _ in endings] == ["UNAVAILABLE"], "each stream was told to reconnect, once"
        assert endings[0][1] - started < 3.0 + 1.0, "streams end within the grace period"
        for name, seqs in got.items():
            assert len(seqs) > 1, name
            assert not (bad := gaps_and_duplicates(seqs, FREQUENCY_MS)), f"{name}: {bad[:5]}"
    assert (await streamer.aio.health())["upstream_detail"]["address"] == two.address
    for browser in browsers:
        assert_continuous(browser, _series(browser.path))
