"""A bounded, contiguous history of one topic's points: window snapshots and resume by sequence.

The ring holds at most about ``capacity`` points of one (series, resolution),
in sequence order, with no hole: every point's predecessor is the point before
it (the :class:`~pulsestream_streamer.core.sequencing.Sequencer` guarantees that
before points get here). Because it is contiguous, "every point after
sequence ``s``" is answerable exactly whenever ``s`` is not older than the
predecessor of the oldest point held (:meth:`Ring.covers`).

Storage is a plain list trimmed in chunks (amortised O(1) append, binary
search by sequence or time). Pure logic, no I/O.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from operator import attrgetter

from pulsestream_streamer.core.samples import Sample

__all__ = ["Ring"]

_SEQ = attrgetter("seq")
_T = attrgetter("t")


class Ring:
    """Bounded history of one topic, oldest first."""

    __slots__ = ("_items", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._items: list[Sample] = []

    def __len__(self) -> int:
        return len(self._items)

    @property
    def last_seq(self) -> int:
        """Sequence of the newest point, 0 when empty."""
        return self._items[-1].seq if self._items else 0

    @property
    def first_seq(self) -> int:
        """Sequence of the oldest point, 0 when empty."""
        return self._items[0].seq if self._items else 0

    @property
    def floor(self) -> int | None:
        """The oldest sequence ``s`` for which "every point after ``s``" is fully held (None when empty)."""
        if not self._items:
            return None
        first = self._items[0]
        return first.prev if first.prev else first.seq - 1

    def covers(self, seq: int) -> bool:
        """True when every point after ``seq`` (up to the newest) is held."""
        floor = self.floor
        return floor is not None and floor <= seq <= self._items[-1].seq

    def append(self, samples: list[Sample]) -> None:
        """Add newer points (in order, contiguous with what is held) and trim the oldest beyond capacity."""
        items = self._items
        items.extend(samples)
        excess = len(items) - self.capacity
        # Trim in chunks of a quarter of the capacity so appends stay amortised O(1).
        if excess > max(1, self.capacity // 4):
            del items[:excess]

    def prepend(self, samples: list[Sample]) -> int:
        """Add older points (a refill from the generator) in front; keep at most ``capacity``.

        Only the part that is older than what is held is used; returns how many were added.
        """
        if not self._items:
            self._items = list(samples[-self.capacity :])
            return len(self._items)
        first = self._items[0].seq
        older = [sample for sample in samples if sample.seq < first]
        room = max(0, self.capacity - len(self._items))
        if room < len(older):
            older = older[len(older) - room :]
        self._items[0:0] = older
        return len(older)

    def clear(self) -> None:
        """Forget everything (after a hole that cannot be refilled)."""
        self._items = []

    def after(self, seq: int, upto: int | None = None, limit: int | None = None) -> list[Sample]:
        """Points with ``seq < point.seq <= upto`` (``upto`` None = the newest), at most ``limit`` of them."""
        items = self._items
        start = bisect_right(items, seq, key=_SEQ)
        end = len(items) if upto is None else bisect_right(items, upto, key=_SEQ)
        if limit is not None:
            end = min(end, start + limit)
        return items[start:end]

    def since(self, t_ms: int, upto: int | None = None) -> list[Sample]:
        """Points with ``point.t >= t_ms`` and ``point.seq <= upto`` (``upto`` None = the newest)."""
        items = self._items
        start = bisect_left(items, t_ms, key=_T)
        end = len(items) if upto is None else bisect_right(items, upto, key=_SEQ)
        return items[start:end]

    def start_after(self, t_ms: int, upto: int, keep: int | None = None) -> int:
        """A sequence ``s`` such that ``after(s, upto)`` is ``since(t_ms, upto)``, or only its last ``keep`` points.

        Lets a snapshot fix where its rows start now and read them later, a piece at a time.
        """
        items = self._items
        start = bisect_left(items, t_ms, key=_T)
        end = bisect_right(items, upto, key=_SEQ)
        if keep is not None:
            start = max(start, end - keep)
        if start < len(items):
            return items[start - 1].seq if start else items[0].seq - 1
        return upto
