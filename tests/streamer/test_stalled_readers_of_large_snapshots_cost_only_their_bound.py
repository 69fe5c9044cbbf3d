"""A stalled client costs its per-connection bound, not its snapshot (issue 15's red-team finding).

Clients that send a request for a large window (four series, one minute at 10 ms: about 1.6 MB of
``snapshot``) and never read pinned that whole snapshot in the streamer until the stall timeout cut
them. Snapshots are now written in pieces as the socket accepts them, so each stalled connection holds
about its write buffer (``STREAMER_CLIENT_WRITE_BUFFER``) in user space. Measured on the real process:
its RSS before and after a batch of stalled connections, each asking for a different window so no two
share an encoded snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import httpx
import pytest
from loopback import wait_until
from services import Stack
from sse import Connection

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

STALLED = 16
SERIES = "cpu,memory,requests,latency"


def _stalled(port: int, path: str) -> socket.socket:
    """A client that sends its request and never reads (a small receive buffer, so writes back up fast)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


async def test_stalled_readers_of_large_snapshots_cost_only_their_bound(stack: Stack) -> None:
    generator = await stack.aio.generator(GENERATOR_FREQUENCY="10ms", GENERATOR_RETENTION="2m")
    streamer = await stack.aio.streamer(
        [generator],
        STREAMER_MAX_WINDOW="1m",
        STREAMER_RING_CAPACITY="7000",
        STREAMER_SOCKET_SEND_BUFFER="16384",
        STREAMER_CLIENT_STALL_TIMEOUT="5m",
    )
    # One full read first: the topics exist, their history is loaded, lazy start-up work is done.
    primer = await Connection.open(streamer.url + f"/v1/stream?series={SERIES}&window=1m")
    events = primer.events()
    sockets: list[socket.socket] = []
    try:
        event = await anext(events)
        while event.event != "snapshot":
            event = await anext(events)
        points = len(event.data["points"])
        assert points > 20_000, f"the snapshot under test is large ({points} points)"
        await asyncio.sleep(1.0)
        before = streamer.rss_kib()
        for i in range(STALLED):
            # A different window each: distinct snapshots, none shared with another client.
            sockets.append(_stalled(streamer.port, f"/v1/stream?series={SERIES}&window={59 - i}s"))

        async def all_connected() -> bool:
            with contextlib.suppress(httpx.HTTPError, ValueError):  # a busy streamer may answer late
                return bool((await streamer.aio.health())["connections"] == STALLED + 1)
            return False

        await wait_until(all_connected, timeout=30, what="the stalled clients to be connected")
        await asyncio.sleep(3.0)  # their snapshots are written as far as their sockets take
        after = streamer.rss_kib()
        per_connection = (after - before) / STALLED
        print(f"\nRSS per stalled connection: {per_connection:.0f} KiB (snapshots of {points} points)")
        assert per_connection < 160, f"each stalled connection holds {per_connection:.0f} KiB"
        # The reader that does read still gets its points.
        event = await asyncio.wait_for(anext(events), 10)
        assert event.event in ("points", "notice")
    finally:
        primer.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
