"""A ``snapshot`` event written in pieces, encoded from the rings as the socket takes them. Pure.

A snapshot can be megabytes (ten minutes of four series at 10 ms); encoded
whole and queued, it sat in the streamer's memory until a stalled client was
cut, per client. So a snapshot is a *plan*, fixed when the client joins (at a
flush boundary: which rows of which ring, up to which sequence), and its
bytes are produced a piece at a time (:meth:`Plan.piece`, about one write
buffer each) only when the client's writer can send them. Memory per client
is then one piece, whatever the window.

The event is one SSE event as before: ``event:``, ``id:``, then ONE ``data:``
line whose JSON arrives in pieces (orjson never writes a newline), then the
blank line. The id and the rows are those of the moment of joining: rings only
grow at the new end, and rows are found by sequence, so reading later gives the
same rows. If a ring has dropped rows a plan still needs (a reader slower
than the ring's turnover, or a hole the generator made), :class:`SnapshotLost`
is raised and the connection is cut mid-event, so the browser reconnects
rather than keep half a snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pulsestream_streamer.core import shape
from pulsestream_streamer.core.ring import Ring
from pulsestream_streamer.core.samples import Sample

__all__ = ["Part", "Plan", "SnapshotLost", "State"]

#: Rough encoded size of one row, to cut pieces near the write buffer (d3 rows; table rows are smaller).
_ROW_BYTES = {False: 80, True: 240}


class SnapshotLost(RuntimeError):
    """Rows a snapshot still had to send are no longer in their ring."""


@dataclass(frozen=True, slots=True)
class Part:
    """The rows of one series from one ring: sequences in ``(after, upto]``.

    ``view`` is the view name the rows are shaped for; ``as_buckets`` shapes raw ticks as
    one-point buckets (a seam of raw points in front of buckets keeps one set of columns).
    """

    series: str
    ring: Ring
    after: int
    upto: int
    view: str
    as_buckets: bool = False


@dataclass(frozen=True, slots=True)
class State:
    """Where a reader of a plan is: the part, the last sequence sent of it, whether rows were sent."""

    part: int = 0
    cursor: int | None = None
    rows: bool = False
    started: bool = False
    done: bool = False


def _as_bucket(s: Sample) -> Sample:
    return s if s.n else Sample(s.seq, s.prev, s.t, s.v, s.v, s.v, s.v, 1, s.v, s.v)


@dataclass(frozen=True, slots=True)
class Plan:
    """A snapshot event: ``head`` bytes, the rows of ``parts`` in order, ``tail`` bytes."""

    fmt: shape.Format
    head: bytes
    parts: Sequence[Part]
    tail: bytes
    piece_bytes: int = 16 * 1024

    def _rows(self, part: Part, budget: int, first: bool) -> int:
        """How many rows of ``part`` fit in ``budget`` bytes (the first batch of a piece: at least 16)."""
        fit = budget // _ROW_BYTES[part.view != "raw" or part.as_buckets]
        return max(16, fit) if first else fit

    def piece(self, state: State) -> tuple[bytes, State] | None:
        """The next piece after ``state`` and the state after it; None once the event is complete."""
        if state.done:
            return None
        out = [] if state.started else [self.head]
        budget = self.piece_bytes
        index, cursor, rows = state.part, state.cursor, state.rows
        while index < len(self.parts) and budget > 0:
            part = self.parts[index]
            position = part.after if cursor is None else cursor
            if position >= part.upto:
                index, cursor = index + 1, None
                continue
            floor = part.ring.floor
            if floor is None or position < floor:
                raise SnapshotLost(f"rows of {part.series} after {position} are gone")
            limit = self._rows(part, budget, budget == self.piece_bytes)
            if limit <= 0:
                break
            batch = part.ring.after(position, part.upto, limit=limit)
            if not batch:
                index, cursor = index + 1, None
                continue
            if part.as_buckets:
                batch = [_as_bucket(s) for s in batch]
            fragment = shape.fragment(self.fmt, part.series, batch, part.view)
            out.append(b"," + fragment if rows else fragment)
            rows = True
            budget -= len(fragment)
            cursor = batch[-1].seq
        done = index >= len(self.parts)
        if done:
            out.append(self.tail)
        return b"".join(out), State(index, cursor, rows, True, done)

    def encode(self) -> bytes:
        """The whole event at once (small snapshots, tests)."""
        pieces, state = [], State()
        while (step := self.piece(state)) is not None:
            piece, state = step
            pieces.append(piece)
        return b"".join(pieces)
