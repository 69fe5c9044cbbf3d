"""The first event of a stream: the window's history (or the points missed since a cursor) as one ``snapshot``.

A snapshot is planned when the client joins (:class:`~pulsestream_streamer.core.pieces.Plan`:
which rows, up to the feed's flushed positions) and written in pieces as the
client's socket takes them, so a client that stops reading holds one piece,
not its whole window (issue 15).

Plans are shared per feed until its next flush, keyed by what they contain,
and so are the pieces they produced: a reconnect storm (every browser of a
drained pod arriving with the same cursor, or a page opened by many at once)
encodes each distinct snapshot once, not once per client. When the feed
flushes, the shared pieces are let go; a reader still part-way through goes
on encoding its own pieces from where it is. The window start is rounded down
to :data:`SNAPSHOT_QUANTUM_MS` so that clients joining together share one key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from pulsestream_streamer.core import cursor as cursors
from pulsestream_streamer.core import shape, sse
from pulsestream_streamer.core.catalogue import Catalogue
from pulsestream_streamer.core.ladder import Continuation
from pulsestream_streamer.core.pieces import Part, Plan, State
from pulsestream_streamer.core.request import StreamRequest
from pulsestream_streamer.fanout.topic import Source
from pulsestream_streamer.observability import tracing

__all__ = ["SNAPSHOT_QUANTUM_MS", "Joining", "SnapshotCache", "SnapshotReader", "window_start"]

#: Snapshot windows start on multiples of this, so clients joining together share one encoding.
SNAPSHOT_QUANTUM_MS = 250

#: Distinct snapshots kept per feed between flushes; past it the cache starts over.
_CACHE_SIZE = 16


def window_start(now_ms: int, window_ms: int) -> int:
    """The first time a window of ``window_ms`` ending now shows, rounded down to the quantum."""
    since = now_ms - window_ms
    return since - since % SNAPSHOT_QUANTUM_MS


@dataclass(frozen=True, slots=True)
class Joining:
    """How a client's snapshot starts: fresh, or resumed with per-series continuations.

    ``continuations`` (resumed only) say, per series, after which sequence of the feed's view
    to start and which seam of an older view's points goes first; ``seams`` are the sources
    those seams are read from (a degraded client's previous view). ``before`` is sent ahead
    of the snapshot, ``after`` right behind it; ``retry`` puts the ``retry:`` field in the snapshot's block.
    """

    resumed: bool = False
    continuations: Mapping[str, Continuation] | None = None
    seams: Mapping[str, Source] | None = None
    before: bytes = b""
    after: bytes = b""
    retry: bool = True


class _Shared:
    """One plan and the pieces readers produced so far (until retired at the feed's next flush)."""

    __slots__ = ("pieces", "plan")

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.pieces: list[tuple[bytes, State]] | None = []


class SnapshotReader(Iterator[bytes]):
    """One client's way through a snapshot: shared pieces while they last, its own after that."""

    __slots__ = ("_index", "_shared", "_state", "plan", "positions")

    def __init__(self, shared: _Shared, positions: Mapping[str, int]) -> None:
        self._shared = shared
        self.plan = shared.plan
        self._index = 0
        self._state = State()
        #: Where the stream stands once the snapshot is written (its id's positions).
        self.positions = positions

    def __next__(self) -> bytes:
        pieces = self._shared.pieces
        if pieces is not None and self._index < len(pieces):
            piece, self._state = pieces[self._index]
            self._index += 1
            return piece
        step = self.plan.piece(self._state)
        if step is None:
            raise StopIteration
        if pieces is not None:
            pieces.append(step)
            self._index += 1
        piece, self._state = step
        return piece

    def whole(self) -> bytes:
        """Everything left, at once (tests, and servers without the piece-wise writer)."""
        return b"".join(self)


class SnapshotCache:
    """The snapshots one feed planned since its last flush (cleared by the feed when its history moves)."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[tuple[object, ...], _Shared] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        for entry in self._entries.values():
            entry.pieces = None  # readers part-way through go on with pieces of their own
        self._entries.clear()

    def snapshot(
        self,
        topics: Sequence[Source],
        flushed: Mapping[str, int],
        request: StreamRequest,
        catalogue: Catalogue,
        *,
        now_ms: int,
        joining: Joining,
        retry_ms: int,
        piece_bytes: int,
    ) -> SnapshotReader:
        """The ``snapshot`` event for ``request``, up to the ``flushed`` positions, as a reader of pieces.

        Synchronous: what the event holds and where the feed's next ``points`` event starts
        are fixed in the same step, so a joining client gets neither a gap nor a duplicate.
        """
        since = window_start(now_ms, request.window_ms)
        reset = (request.cursor is not None or request.cursor_error is not None) and not joining.resumed

        def plan() -> _Shared:
            return _Shared(
                _plan(
                    topics,
                    flushed,
                    request,
                    catalogue,
                    since=since,
                    reset=reset,
                    joining=joining,
                    retry_ms=retry_ms,
                    piece_bytes=piece_bytes,
                )
            )

        if joining.seams:  # a degraded client: its seam is its own
            return SnapshotReader(plan(), flushed)
        cursor = request.cursor
        cursor_key = (cursor.resolution, *sorted(cursor.positions.items())) if (joining.resumed and cursor) else ()
        key = (since, request.window_ms, reset, cursor_key, id(catalogue), request.max_points, joining.after)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= _CACHE_SIZE:
                self.clear()
            self._entries[key] = entry = plan()
        return SnapshotReader(entry, flushed)


def _parts(
    topics: Sequence[Source], flushed: Mapping[str, int], request: StreamRequest, since: int, joining: Joining
) -> list[Part]:
    view = request.view
    parts: list[Part] = []
    for topic in topics:
        series, upto = topic.series, flushed[topic.series]
        plan = (joining.continuations or {}).get(series) if joining.resumed else None
        if plan is None or not plan.after:
            after = topic.ring.start_after(since, upto, request.max_points)
            parts.append(Part(series, topic.ring, after, upto, view.name))
            continue
        if plan.seam is not None and joining.seams:
            old = joining.seams[series]
            start, end = plan.seam
            parts.append(Part(series, old.ring, start - 1, end - 1, view.name, as_buckets=old.bucket_ms == 0))
        parts.append(Part(series, topic.ring, plan.after, upto, view.name))
    return parts


def _plan(
    topics: Sequence[Source],
    flushed: Mapping[str, int],
    request: StreamRequest,
    catalogue: Catalogue,
    *,
    since: int,
    reset: bool,
    joining: Joining,
    retry_ms: int,
    piece_bytes: int,
) -> Plan:
    view = request.view
    infos = [catalogue.info(name) for name in request.series]
    meta = shape.snapshot_meta(
        request.fmt,
        view.name,
        infos,
        request.window_ms,
        since + request.window_ms,
        bucket_ms=view.bucket_ms,
        max_points=request.max_points,
    )
    meta |= tracing.trace_fields(topics)
    retry = retry_ms if joining.retry else None
    body_head, body_tail = shape.snapshot_ends(
        request.fmt, view.name, meta, reset=reset, resumed=joining.resumed, retry_ms=retry
    )
    # The retry: field rides in the snapshot's own block, never alone (see core.sse).
    head = joining.before + sse.event_head("snapshot", cursors.encode(view.name, flushed), retry) + body_head
    tail = body_tail + b"\n\n" + joining.after
    return Plan(request.fmt, head, _parts(topics, flushed, request, since, joining), tail, piece_bytes)
