"""A feed: the clients that want the same (series, view, format), served by one event per flush.

Identical streams share a :class:`Feed`. Its topics hand it pre-encoded
fragments; at each flush it joins them into ONE ``points`` event with ONE
cursor id and gives that same ``bytes`` object to every client (framed once
for HTTP/1.1 chunked transfer too, see :meth:`Client.deliver`). It tracks two
positions per series: what it has been handed (the next event's cursor) and
what its clients have been sent (where a joining client's snapshot ends), so
a join never duplicates nor skips a point.

The view is a generator resolution or a width the streamer builds
(``maxPoints``, degraded clients); either way its sources look alike
(:class:`~pulsestream_streamer.fanout.topic.Source`). A feed signals that it
has something to flush through the ``on_dirty`` callback it was built with;
it does not know who flushes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pulsestream_streamer.core import cursor as cursors
from pulsestream_streamer.core import ladder, shape, sse
from pulsestream_streamer.core.catalogue import Catalogue
from pulsestream_streamer.core.request import StreamRequest
from pulsestream_streamer.fanout.clients import Client
from pulsestream_streamer.fanout.snapshots import Joining, SnapshotCache, SnapshotReader
from pulsestream_streamer.fanout.topic import Source
from pulsestream_streamer.observability import tracing
from pulsestream_streamer.observability.metrics import StreamerMetrics

__all__ = ["Feed", "FeedKey"]

#: (series, view name, format): what identical streams have in common.
FeedKey = tuple[tuple[str, ...], str, shape.Format]


class Feed:
    """Clients that want the same (series, view, format): one event per flush, shared by all."""

    def __init__(
        self,
        series: tuple[str, ...],
        resolution: str,
        fmt: shape.Format,
        topics: list[Source],
        on_dirty: Callable[[Feed], None],
    ) -> None:
        self.key: FeedKey = (series, resolution, fmt)
        self.series = series
        self.resolution = resolution
        self.view = ladder.view_of(cursors.WIDTHS[resolution])
        self._fmt: shape.Format = fmt
        self.topics = topics
        self.clients: dict[str, Client] = {}
        self._on_dirty = on_dirty
        self._pending: list[bytes] = []
        self._oldest_t = 0
        self._dirty = False
        # positions: the newest point handed to this feed (the next event's cursor);
        # flushed: the newest point its clients have been sent (where a joining client's snapshot ends).
        self.positions: dict[str, int] = {topic.series: topic.ring.last_seq for topic in topics}
        self.flushed: dict[str, int] = dict(self.positions)
        self.snapshots = SnapshotCache()
        self._meta = tracing.points_meta(shape.points_meta(fmt, resolution), topics)  # + upstream trace id
        self.flushes = 0

    # --- TopicListener ----------------------------------------------------------------------------

    @property
    def fmt(self) -> shape.Format:
        return self._fmt

    @property
    def audience(self) -> int:
        return len(self.clients)

    def add(self, series: str, fragment: bytes, last_seq: int, oldest_t: int) -> None:
        """New points of one topic. With no client yet they are simply part of the next snapshot."""
        if not self.clients:
            self.positions[series] = self.flushed[series] = last_seq
            self.snapshots.clear()
            return
        if not self._pending:
            self._oldest_t = oldest_t
        self._pending.append(fragment)
        self.positions[series] = last_seq
        if not self._dirty:
            self._dirty = True
            self._on_dirty(self)

    def broadcast(self, frame: bytes) -> None:
        """An out-of-band event (upstream trouble, a data gap) to every client now."""
        for client in self.clients.values():
            client.push(frame)

    def history_changed(self) -> None:
        self.snapshots.clear()

    # --- clients ----------------------------------------------------------------------------------

    def snapshot(
        self,
        request: StreamRequest,
        catalogue: Catalogue,
        *,
        now_ms: int,
        joining: Joining,
        retry_ms: int,
        piece_bytes: int = 16 * 1024,
    ) -> SnapshotReader:
        """The first event for a client joining now (see :mod:`~pulsestream_streamer.fanout.snapshots`)."""
        return self.snapshots.snapshot(
            self.topics,
            self.flushed,
            request,
            catalogue,
            now_ms=now_ms,
            joining=joining,
            retry_ms=retry_ms,
            piece_bytes=piece_bytes,
        )

    def join(self, client: Client, first: SnapshotReader) -> None:
        """Attach ``client`` with ``first`` (its snapshot) in front: every later flush reaches it after that."""
        client.prime(first, first.positions)
        self.clients[client.id] = client

    def leave(self, client: Client) -> None:
        """Detach ``client``; with nobody left, pending points belong to the next joiner's snapshot instead."""
        self.clients.pop(client.id, None)
        if not self.clients:
            self._pending = []
            self.flushed = dict(self.positions)
            self.snapshots.clear()

    # --- flushing ---------------------------------------------------------------------------------

    def flush(self, metrics: StreamerMetrics, now_ms: int) -> None:
        """Send pending points as one ``points`` event to every client (same bytes for all)."""
        self._dirty = False
        if not self._pending:
            return
        body = shape.points_body(self._fmt, self.resolution, self._pending, self._meta)
        event = sse.frame("points", body, cursors.encode(self.resolution, self.positions))
        self._pending = []
        self.flushed = dict(self.positions)
        self.snapshots.clear()
        self.flushes += 1
        clients = self.clients
        # The HTTP/1.1 chunk framing is the same for every client too: frame once, write many.
        chunk = b"%x\r\n" % len(event) + event + b"\r\n"
        now = asyncio.get_running_loop().time()
        flushed = self.flushed
        for client in clients.values():
            client.deliver(event, chunk, now, flushed)
        count = len(clients)
        metrics.events_sent.labels("points").inc(count)
        metrics.bytes_sent.inc(len(event) * count)
        metrics.delivery_lag.observe(max(0.0, (now_ms - self._oldest_t) / 1000))
