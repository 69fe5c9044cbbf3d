"""The first event of a stream: the window's history (or the points missed since a cursor) as one ``snapshot``.

Snapshots are cached per feed until its next flush, keyed by what they
contain, so a reconnect storm (every browser of a drained pod arriving with
the same cursor, or a page opened by many at once) encodes each distinct
snapshot once, not once per client. The window start is rounded down to
:data:`SNAPSHOT_QUANTUM_MS` so that clients joining together share one key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pulsestream_streamer.core import cursor as cursors
from pulsestream_streamer.core import shape, sse
from pulsestream_streamer.core.catalogue import Catalogue
from pulsestream_streamer.core.request import StreamRequest
from pulsestream_streamer.fanout.topic import Topic
from pulsestream_streamer.observability import tracing

__all__ = ["SNAPSHOT_QUANTUM_MS", "SnapshotCache", "window_start"]

#: Snapshot windows start on multiples of this, so clients joining together share one encoding.
SNAPSHOT_QUANTUM_MS = 250

#: Distinct snapshots kept per feed between flushes; past it the cache starts over.
_CACHE_SIZE = 16


def window_start(now_ms: int, window_ms: int) -> int:
    """The first time a window of ``window_ms`` ending now shows, rounded down to the quantum."""
    since = now_ms - window_ms
    return since - since % SNAPSHOT_QUANTUM_MS


class SnapshotCache:
    """The snapshots one feed encoded since its last flush (cleared by the feed when its history moves)."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[tuple[object, ...], bytes] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def snapshot(
        self,
        topics: Sequence[Topic],
        flushed: Mapping[str, int],
        request: StreamRequest,
        catalogue: Catalogue,
        *,
        now_ms: int,
        resumed: bool,
        retry_ms: int,
    ) -> bytes:
        """The ``retry:`` field and the ``snapshot`` event for ``request``, up to the ``flushed`` positions.

        Synchronous: what the event holds and where the feed's next ``points`` event starts
        are read in the same step, so a joining client gets neither a gap nor a duplicate.
        """
        since = window_start(now_ms, request.window_ms)
        reset = (request.cursor is not None or request.cursor_error is not None) and not resumed
        cursor_key = tuple(sorted(request.cursor.positions.items())) if (resumed and request.cursor) else ()
        key = (since, request.window_ms, reset, cursor_key, id(catalogue))
        cached = self._entries.get(key)
        if cached is not None:
            return cached
        if len(self._entries) >= _CACHE_SIZE:
            self._entries.clear()
        self._entries[key] = first = _encode(
            topics, flushed, request, catalogue, since, reset=reset, resumed=resumed, retry_ms=retry_ms
        )
        return first


def _encode(
    topics: Sequence[Topic],
    flushed: Mapping[str, int],
    request: StreamRequest,
    catalogue: Catalogue,
    since: int,
    *,
    reset: bool,
    resumed: bool,
    retry_ms: int,
) -> bytes:
    fragments = []
    for topic in topics:
        upto = flushed[topic.series]
        position = request.cursor.positions.get(topic.series, 0) if (resumed and request.cursor) else 0
        samples = topic.ring.after(position, upto) if position else topic.ring.since(since, upto)
        fragments.append(shape.fragment(request.fmt, topic.series, samples, request.resolution))
    infos = [catalogue.info(name) for name in request.series]
    meta = shape.snapshot_meta(request.fmt, request.resolution, infos, request.window_ms, since + request.window_ms)
    meta |= tracing.trace_fields(topics)
    body = shape.snapshot_body(request.fmt, request.resolution, fragments, meta, reset=reset, resumed=resumed)
    event_id = cursors.encode(request.resolution, flushed)
    return sse.retry_frame(retry_ms) + sse.frame("snapshot", body, event_id)
