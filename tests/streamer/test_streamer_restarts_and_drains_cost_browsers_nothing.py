"""Streamer restarts and SIGTERM drains under load: clients are told to move, move, and lose nothing.

- A streamer killed while browsers are connected is restarted on its port as a NEW, empty process; the
  browsers reconnect with their Last-Event-ID and get exactly the points they missed, which the new
  process loads from the generator's history by sequence.
- SIGTERM to a streamer under load: every client gets ``server_shutdown``, the process exits within its
  graceful period, the clients resume on the other replica without gap or duplicate.

(SIGTERM to a generator under load is in tests/generator.)
"""

from __future__ import annotations

import signal
import time

import pytest
from loopback import wait_until
from services import FREQUENCY_MS, Stack
from sse import EventSource, assert_continuous, following, now_ms

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

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
                lambda e: e.event == "notice" and e.data["code"] == "server_shutdown", what="server_shutdown"
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
