"""Shared upstream and slow consumers: N browsers cost one gRPC stream; a stalled one hurts nobody."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import orjson
import pytest
from loopback import wait_until
from pulsestream_streamer.core import cursor
from services import Generator, Streamer, run_streamer
from sse import Event, assert_contiguous, seqs_by_series, sse


def position(event: Event) -> int:
    return cursor.decode(event.id or "").positions["requests"]


async def test_twenty_clients_on_one_series_share_one_upstream_stream(generator: Generator) -> None:
    # A long flush interval: clients join while points are pending, the case where a join could duplicate.
    async with run_streamer(generator.address, flush_interval="400ms") as streamer:
        await _twenty_clients(streamer)


async def _twenty_clients(streamer: Streamer) -> None:
    url = streamer.url + "/v1/stream?series=requests&window=1s"
    async with contextlib.AsyncExitStack() as stack:
        readers = [await stack.enter_async_context(sse(url)) for _ in range(20)]
        await asyncio.gather(*(reader.next() for reader in readers))
        updates = await asyncio.gather(*(reader.next() for reader in readers))
        assert await streamer.metric("pulsestream_streamer_upstream_streams") == 1
        assert await streamer.metric("pulsestream_streamer_topics") == 1
        assert await streamer.metric("pulsestream_streamer_sse_connections") == 20
        assert len(streamer.state.hub.feeds) == 1, "identical streams share one feed"
        # An event flushed after everyone joined reaches everyone, with the same cursor.
        newest = max(position(update) for update in updates)
        common = (await readers[0].until(lambda e: position(e) > newest))[-1]
        later = await asyncio.gather(
            *(reader.until(lambda e: position(e) >= position(common)) for reader in readers[1:])
        )
        assert all(events[-1].id == common.id for events in later)
        assert all(events[-1].raw == common.raw for events in later)
        for reader in readers:
            assert_contiguous(seqs_by_series(reader.events)["requests"])
    await wait_until(lambda: len(streamer.state.registry) == 0, what="disconnects seen")


def _stalled_client(port: int, path: str) -> socket.socket:
    """A client that sends a request and never reads: tiny receive buffer, so the server's writes back up."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


@pytest.mark.fault
async def test_a_stalled_client_is_dropped_without_delaying_others_and_its_memory_stays_bounded(
    generator: Generator,
) -> None:
    max_bytes = 64 * 1024
    async with run_streamer(
        generator.address,
        buffer_size="16",
        client_max_queue_bytes=str(max_bytes),
        socket_send_buffer="16384",
    ) as streamer:
        port = int(streamer.url.rsplit(":", 1)[1])
        # A 2-minute window of all series is a few MB: far more than the socket buffers hold.
        path = "/v1/stream?window=2m"
        stalled = _stalled_client(port, path)
        try:
            async with sse(streamer.url + path) as healthy:
                await healthy.next(timeout=20)
                registry = streamer.state.registry
                peak = 0
                lags: list[float] = []
                deadline = time.monotonic() + 20
                while await streamer.metric("pulsestream_streamer_sse_client_drops_total") < 1:
                    assert time.monotonic() < deadline, "the stalled client was never dropped"
                    event = await healthy.next()
                    now_ms = time.time() * 1000
                    lags.extend(now_ms - row["t"] for row in event.data["points"])
                    peak = max([peak, *(client.queued_bytes for client in registry)])
                drops = await streamer.metric(
                    "pulsestream_streamer_sse_client_drops_total", {"reason": "slow_consumer"}
                )
                assert drops == 1
                # The healthy client kept getting fresh points the whole time.
                for _ in range(5):
                    event = await healthy.next()
                    lags.extend(time.time() * 1000 - row["t"] for row in event.data["points"])
                assert max(lags) < 1500, f"healthy client delayed: max lag {max(lags):.0f} ms"
                assert peak <= max_bytes + 16 * 1024, f"a client's queue grew to {peak} bytes"
                await wait_until(lambda: len(registry) == 1, what="the stalled client to be gone")
        finally:
            stalled.close()


async def test_clients_joining_together_share_one_encoded_snapshot(streamer: Streamer) -> None:
    from pulsestream_streamer.core.clock import epoch_ms
    from pulsestream_streamer.core.request import StreamRequest
    from pulsestream_streamer.fanout.snapshots import Joining, SnapshotReader

    async with sse(streamer.url + "/v1/stream?series=cpu,memory&window=30s") as reader:
        await reader.next()
        hub = streamer.state.hub
        feed = next(iter(hub.feeds.values()))
        request = StreamRequest(series=("cpu", "memory"), resolution="raw", window_ms=30_000, fmt="d3")
        now = epoch_ms()

        def snapshot(request: StreamRequest) -> SnapshotReader:
            return feed.snapshot(request, hub.catalogue.current, now_ms=now, joining=Joining(), retry_ms=2000)

        first, again = snapshot(request), snapshot(request)
        pieces = list(first)
        assert len(pieces) > 1, "a 30 s window of two series is written in pieces"
        assert all(len(piece) < 24 * 1024 for piece in pieces), "each piece is about one write buffer"
        shared = list(again)
        assert all(a is b for a, b in zip(pieces, shared, strict=True)), "encoded once until the next flush"
        other_window = snapshot(StreamRequest(("cpu", "memory"), "raw", 10_000, "d3")).whole()
        assert other_window != b"".join(pieces)
        body = b"".join(pieces).split(b"data: ", 1)[1]
        assert body.endswith(b"\n\n") and b"\n" not in body[:-2], "one event, one data line"
        assert len(orjson.loads(body)["points"]) > 2 * 25_000 // 50
