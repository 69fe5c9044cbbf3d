"""Restarts and SIGTERM drains under load: clients are told to move, move, and lose nothing.

- A streamer killed while browsers are connected is restarted on its port as a NEW, empty process; the
  browsers reconnect with their Last-Event-ID and get exactly the points they missed, which the new
  process loads from the generator's history by sequence.
- SIGTERM to a streamer under load: every client gets ``server_shutdown``, the process exits within its
  graceful period, the clients resume on the other replica without gap or duplicate.
- SIGTERM to a generator under load (direct gRPC subscribers and a streamer): every stream ends with
  UNAVAILABLE within the grace period, subscribers resume on the other replica by ``after_sequence``.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time

import grpc
from loopback import wait_until
from services import FREQUENCY_MS, Stack
from sse import EventSource, assert_continuous, following, gaps_and_duplicates, now_ms

from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc

PATHS = [
    "/v1/stream?series=cpu,memory&window=1s",
    "/v1/stream?series=latency&window=1s",
    "/v1/stream?series=cpu,requests,latency&window=1s&format=d3",
]


def _series(path: str) -> set[str]:
    return set(path.split("series=")[1].split("&", maxsplit=1)[0].split(","))


async def test_a_restarted_empty_streamer_gives_reconnecting_browsers_exactly_what_they_missed(stack: Stack) -> None:
    generator = await stack.aio.generator()
    streamer = await stack.aio.streamer([generator])
    clients = [EventSource([streamer.url], PATHS[i % len(PATHS)]) for i in range(6)]
    async with following(*clients):
        for client in clients:
            await client.wait_for(lambda e: e.event == "points", what="live points")
        streamer.kill()
        last = max(client.last_seq() for client in clients)
        # The new process keeps one second of history, and is down longer than that: the points the
        # browsers missed are not in what it loads at start, only in the generator's history.
        streamer.env.update({"STREAMER_MAX_WINDOW": "1s", "STREAMER_DEFAULT_WINDOW": "1s"})
        await wait_until(lambda: now_ms() > last + 2000, what="two seconds of missed ticks")
        streamer.start()
        await streamer.aio.wait_ready()
        for client in clients:
            await client.wait_past(last + 1500)
    for client in clients:
        assert client.connections >= 2
        resumed = [e for e in client.of("snapshot") if e.connection == client.connections]
        assert resumed and resumed[0].data["resumed"] is True and resumed[0].data["reset"] is False
        assert len(resumed[0].data["points"]) >= len(_series(client.path)) * 2000 // FREQUENCY_MS, (
            "the resumed snapshot holds the two seconds of the outage"
        )
        assert_continuous(client, _series(client.path))


async def test_sigterm_under_load_drains_the_streamer_and_its_clients_resume_on_another(stack: Stack) -> None:
    generator = await stack.aio.generator()
    one = await stack.aio.streamer([generator])
    two = await stack.aio.streamer([generator])
    clients = [EventSource([one.url, two.url], PATHS[i % len(PATHS)]) for i in range(60)]
    async with following(*clients):
        for client in clients:
            await client.wait_for(lambda e: e.event == "points", what="live points")
        assert (await one.aio.health())["connections"] == len(clients)
        started = time.monotonic()
        one.signal(signal.SIGTERM)
        for client in clients:
            await client.wait_for(
                lambda e: e.event == "error" and e.data["code"] == "server_shutdown", what="server_shutdown"
            )
        code = await one.aio.wait_exit(15)
        drained = time.monotonic() - started
        last = max(client.last_seq() for client in clients)
        for client in clients:
            await client.wait_past(last + 500)
        assert (await two.aio.health())["connections"] == len(clients)
    assert code in (0, -signal.SIGTERM), one.log_text()[-2000:]
    print(f"streamer drained {len(clients)} clients in {drained:.2f}s")
    assert drained < 3.0 + 2.0, f"drain took {drained:.1f}s; graceful period is 3s"
    assert "Exception in ASGI application" not in one.log_text()
    for client in clients:
        assert client.retry_ms == 200, "the new replica's retry: replaced the short shutdown retry"
        assert_continuous(client, _series(client.path))


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
