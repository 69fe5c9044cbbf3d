"""Buckets the streamer builds: wider buckets from raw ticks or from narrower generator buckets. Pure.

A bucket of width ``w`` covers ``[start, start + w)``, ``start`` a multiple of
``w`` in epoch milliseconds, exactly like the generator's (so a 2s bucket
holds two 1s buckets, a 500ms bucket fifty 10 ms ticks). Its statistics
combine its inputs without loss: min of mins, max of maxes, mean weighted by
count, first of the first, last of the last, count summed; a raw tick counts
as one point with itself as every statistic. Its ``seq`` and ``t`` are its
start, ``v`` its mean, ``prev`` the start of the bucket before it.

A bucket is emitted when it *closes*: at the first input at or after its end,
as the generator does, since inputs only move forward. :func:`rollup` builds
every closed bucket from a history (a topic's ring), dropping a first bucket
that the history does not hold whole; :class:`Roller` then continues with the
inputs that follow, so history and live points are the same buckets.
"""

from __future__ import annotations

from collections.abc import Sequence

from pulsestream_streamer.core.samples import Sample

__all__ = ["Roller", "rollup", "summarise"]


class Roller:
    """Turns inputs (in order, contiguous) into closed buckets of ``width`` ms; keeps the open one."""

    __slots__ = ("_count", "_first", "_last", "_max", "_min", "_sum", "partial", "prev", "start", "width")

    def __init__(self, width: int, prev: int = 0, *, partial: bool = False) -> None:
        if width <= 0:
            raise ValueError("bucket width must be positive")
        self.width = width
        #: Start of the last bucket emitted (the ``prev`` link of the next one), 0 = none.
        self.prev = prev
        #: Start of the open bucket, -1 = none open.
        self.start = -1
        #: The open bucket began before the inputs did: when it closes it is skipped, not emitted.
        self.partial = partial
        self._count = 0
        self._min = self._max = self._sum = self._first = self._last = 0.0

    def _close(self) -> Sample:
        bucket = Sample(
            self.start,
            self.prev,
            self.start,
            self._sum / self._count,
            self._min,
            self._max,
            self._sum / self._count,
            self._count,
            self._first,
            self._last,
        )
        self.prev = self.start
        return bucket

    def take(self, samples: Sequence[Sample]) -> list[Sample]:
        """Feed inputs newer than any before; return the buckets they closed, oldest first."""
        closed: list[Sample] = []
        width = self.width
        for s in samples:
            start = s.t - s.t % width
            if s.n:
                count, low, high, total, first, last = s.n, s.min, s.max, s.mean * s.n, s.first, s.last
            else:
                count, low, high, total, first, last = 1, s.v, s.v, s.v, s.v, s.v
            if start != self.start:
                if self.start >= 0:
                    if self.partial:
                        self.partial = False
                        self.prev = self.start
                    else:
                        closed.append(self._close())
                self.start = start
                self._count, self._min, self._max, self._sum, self._first = count, low, high, total, first
            else:
                self._count += count
                self._sum += total
                self._min = min(self._min, low)
                self._max = max(self._max, high)
            self._last = last
        return closed


def rollup(history: Sequence[Sample], width: int) -> tuple[list[Sample], Roller]:
    """Every closed bucket of ``width`` the contiguous ``history`` holds whole, and a roller for what follows.

    The first bucket counts only when nothing of it can be missing: the oldest input's
    predecessor (``prev``) is before the bucket's start, or there is none (series start).
    """
    if not history:
        return [], Roller(width)
    oldest = history[0]
    start = oldest.t - oldest.t % width
    whole = not oldest.prev or oldest.prev < start
    before = oldest.prev - oldest.prev % width if oldest.prev else 0
    roller = Roller(width, before, partial=not whole)
    return roller.take(history), roller


def summarise(samples: Sequence[Sample], width: int) -> list[Sample]:
    """Every bucket of ``samples``, the last one (open) included: for tests and one-off reductions."""
    roller = Roller(width)
    closed = roller.take(samples)
    if roller.start >= 0:
        closed.append(roller._close())
    return closed
