"""The SSE wire as third-party clients read it (issue 16): no block without data, no event named ``error``.

httpx-sse yielded the old ``retry:``-only block as an empty message and sseclient-py dropped it, retry and
all; npm ``eventsource`` dispatched the old ``event: error`` to ``onerror``. Now ``retry:`` rides in the
snapshot's own block (and in the notices that end a stream), and the server's notices are ``event: notice``.
A notice also follows every point handed to the feed before it, so "points again" means "upstream back".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from httpx_sse import aconnect_sse
from pulsestream_streamer.core import sse
from pulsestream_streamer.core.ring import Ring
from pulsestream_streamer.fanout.clients import Client, ClientLimits
from pulsestream_streamer.fanout.feed import Feed
from pulsestream_streamer.observability.metrics import StreamerMetrics
from services import Streamer


async def test_the_first_block_is_the_snapshot_with_retry_in_it_and_every_block_carries_data(
    streamer: Streamer,
) -> None:
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", streamer.url + "/v1/stream?series=cpu&window=1s") as response,
    ):
        buffer = b""
        async for chunk in response.aiter_bytes():
            buffer += chunk
            if buffer.count(b"\n\n") >= 4:
                break
    blocks = buffer.split(b"\n\n")[:4]
    first = blocks[0].split(b"\n")
    assert first[0] == b"retry: 2000" and first[1] == b"event: snapshot", first[:3]
    assert first[2].startswith(b"id: ") and first[3].startswith(b"data: ")
    assert orjson.loads(first[3][6:])["retryMs"] == 2000, "the retry repeated for clients that cannot read it"
    for block in blocks:
        lines = block.split(b"\n")
        assert any(line.startswith(b"data: ") for line in lines) or all(line.startswith(b":") for line in lines)
        assert b"event: error" not in block


async def test_httpx_sse_sees_only_events_with_data_and_the_retry_on_the_snapshot(streamer: Streamer) -> None:
    seen: list[tuple[str, str, int | None]] = []
    async with (
        httpx.AsyncClient(timeout=10) as client,
        aconnect_sse(client, "GET", streamer.url + "/v1/stream", params={"series": "cpu,memory"}) as source,
    ):
        async for event in source.aiter_sse():
            seen.append((event.event, event.data, event.retry))
            if len(seen) == 4:
                break
    assert seen[0][0] == "snapshot" and seen[0][2] == 2000, seen[0][::2]
    assert all(data for _, data, _ in seen), "httpx-sse yields no empty message"
    assert [name for name, _, _ in seen[1:]] == ["points"] * 3


@dataclass
class _Source:
    """The little of a topic a feed reads (series, ring, trace)."""

    series: str
    ring: Ring = field(default_factory=lambda: Ring(16))
    trace: Any = None

    def __post_init__(self) -> None:
        self.trace = type("Trace", (), {"trace_id": ""})()


async def test_a_notice_is_sent_after_the_points_handed_to_the_feed_before_it() -> None:
    feed = Feed(("cpu",), "raw", "d3", [_Source("cpu")], on_dirty=lambda _: None)  # type: ignore[list-item]
    client = Client("127.0.0.1:1", "k", ClientLimits(), asyncio.get_running_loop().time())
    feed.clients[client.id] = client
    feed.add("cpu", b'{"series":"cpu","t":1,"v":0.5,"seq":1}', 1, 1)
    notice = sse.notice_frame("upstream_unavailable", "down", series=["cpu"])
    feed.broadcast(notice)
    assert client.queued == 0, "held until the pending points went out"
    feed.flush(StreamerMetrics(), 10)
    body = await client.next_body()
    assert body is not None
    assert body.index(b"event: points") < body.index(b"event: notice")
    feed.broadcast(notice)  # nothing pending: at once
    assert client.queued == 1
