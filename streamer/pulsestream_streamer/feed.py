"""A feed: the clients that want the same (series, resolution, format), served by one event per flush.

Identical streams share a :class:`Feed`. Its topics hand it pre-encoded
fragments; at each flush it joins them into ONE ``points`` event with ONE
cursor id and gives that same ``bytes`` object to every client (framed once
for HTTP/1.1 chunked transfer too, see :meth:`Client.deliver`). It tracks two
positions per series: what it has been handed (the next event's cursor) and
what its clients have been sent (where a joining client's snapshot ends), so
a join never duplicates nor skips a point.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pulsestream_streamer import cursor as cursors
from pulsestream_streamer import shape, sse, tracing
from pulsestream_streamer.metrics import StreamerMetrics
from pulsestream_streamer.registry import Client

if TYPE_CHECKING:
    from pulsestream_streamer.hub import Hub
    from pulsestream_streamer.topic import Topic

__all__ = ["Feed"]


class Feed:
    """Clients that want the same (series, resolution, format): one event per flush, shared by all."""

    def __init__(self, series: tuple[str, ...], resolution: str, fmt: shape.Format, topics: list[Topic]) -> None:
        self.key = (series, resolution, fmt)
        self.series = series
        self.resolution = resolution
        self.fmt: shape.Format = fmt
        self.topics = topics
        self.clients: dict[str, Client] = {}
        self.joining = 0
        self.pending: list[bytes] = []
        self.oldest_t = 0
        # positions: the newest point handed to this feed (the next event's cursor);
        # flushed: the newest point its clients have been sent (where a joining client's snapshot ends).
        self.positions: dict[str, int] = {topic.series: topic.ring.last_seq for topic in topics}
        self.flushed: dict[str, int] = dict(self.positions)
        #: Snapshots encoded since the last flush (see :meth:`Hub._snapshot`).
        self.snapshots: dict[tuple[object, ...], bytes] = {}
        self.meta = tracing.points_meta(shape.points_meta(fmt, resolution), topics)  # + upstream trace id
        self.flushes = 0
        self.dirty = False
        self.hub: Hub | None = None

    def add(self, series: str, fragment: bytes, last_seq: int, oldest_t: int) -> None:
        """New points of one topic. With no client yet they are simply part of the next snapshot."""
        if not self.clients:
            self.positions[series] = self.flushed[series] = last_seq
            self.snapshots.clear()
            return
        if not self.pending:
            self.oldest_t = oldest_t
        self.pending.append(fragment)
        self.positions[series] = last_seq
        if not self.dirty and self.hub is not None:
            self.dirty = True
            self.hub.mark_dirty(self)

    def flush(self, metrics: StreamerMetrics, now_ms: int) -> None:
        """Send pending points as one ``points`` event to every client (same bytes for all)."""
        self.dirty = False
        if not self.pending:
            return
        body = shape.points_body(self.fmt, self.resolution, self.pending, self.meta)
        event = sse.frame("points", body, cursors.encode(self.resolution, self.positions))
        self.pending = []
        self.flushed = dict(self.positions)
        self.snapshots.clear()
        self.flushes += 1
        clients = self.clients
        # The HTTP/1.1 chunk framing is the same for every client too: frame once, write many.
        chunk = b"%x\r\n" % len(event) + event + b"\r\n"
        now = asyncio.get_running_loop().time()
        for client in clients.values():
            client.deliver(event, chunk, now)
        count = len(clients)
        metrics.events_sent.labels("points").inc(count)
        metrics.bytes_sent.inc(len(event) * count)
        metrics.delivery_lag.observe(max(0.0, (now_ms - self.oldest_t) / 1000))

    def broadcast(self, frame: bytes) -> None:
        """An out-of-band event (error) to every client now."""
        for client in self.clients.values():
            client.push(frame)
