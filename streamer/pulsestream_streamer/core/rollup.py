"""Buckets the streamer builds: wider buckets from raw ticks or from narrower generator buckets. Pure.

A bucket of width ``w`` covers ``[start, start + w)``, ``start`` a multiple of
``w`` in epoch milliseconds, exactly like the generator's (so a 2s bucket
holds two 1s buckets, a 500ms bucket fifty 10 ms ticks). Its statistics
combine its inputs without loss: min of mins, max of maxes, mean weighted by
count, first of the first, last of the last, count summed; a raw tick counts
as one point with itself as every statistic. Its ``seq`` and ``t`` are its
start, ``v`` its mean, ``prev`` the start of the bucket before it.

A bucket is emitted when it *closes*: at the first input at or after its end,
as the generator does, since inputs only move forward. A roller's first
bucket counts only when nothing of it can be missing: its first input's
predecessor (``prev``) is before the bucket's start, or there is none (the
series starts there); else it is skipped (a ring trimmed mid-bucket). So
:func:`rollup` over a topic's ring, then :meth:`Roller.take` on the inputs that
follow, give the same buckets as the whole history would: snapshots and live
points are one set of buckets.
"""

from __future__ import annotations

from collections.abc import Sequence

from pulsestream_streamer.core.samples import Sample

__all__ = ["Roller", "rollup", "summarise"]


class Roller:
    """Turns inputs (in order, contiguous) into closed buckets of ``width`` ms; keeps the open one."""

    __slots__ = ("_count", "_first", "_last", "_max", "_min", "_sum", "partial", "prev", "start", "width")

    def __init__(self, width: int) -> None:
        if width <= 0:
            raise ValueError("bucket width must be positive")
        self.width = width
        #: Start of the last bucket before the open one (the ``prev`` link of the next one), 0 = none.
        self.prev = 0
        #: Start of the open bucket, -1 = none open yet.
        self.start = -1
        #: The open bucket began before the inputs did: when it closes it is skipped, not emitted.
        self.partial = False
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
                if self.start < 0:  # the first input: is its bucket whole?
                    self.partial = bool(s.prev) and s.prev >= start
                    self.prev = s.prev - s.prev % width if s.prev else 0
                elif self.partial:
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
    """Every closed bucket of ``width`` that the contiguous ``history`` holds whole, and the roller to go on with."""
    roller = Roller(width)
    return roller.take(history), roller


def summarise(samples: Sequence[Sample], width: int) -> list[Sample]:
    """Every bucket of ``samples``, the last one (open) included: for tests and one-off reductions."""
    roller = Roller(width)
    closed = roller.take(samples)
    if roller.start >= 0 and not roller.partial:
        closed.append(roller._close())
    return closed
