"""One published series' history: its own timeline of points, its closed buckets, its late points. Pure.

Synthetic series tick together and share one tick array (:mod:`.history`).
A published series has its own times, so it gets a :class:`Timeline`: a
one-series :class:`~.history.History` ring plus what aggregation needs to be
final.

Sequences
    A point's sequence is its timestamp in epoch milliseconds. A point is
    stored only when it is newer than the newest stored one, so sequences
    strictly increase; the caller (:mod:`.publishedstore`) sorts each batch
    and sorts out duplicates (equal timestamps) and out-of-order points
    (older ones) before :meth:`Timeline.append`.

Closing buckets
    Ticks of synthetic series come at a known period, so a bucket closes at
    the first tick at or after its end. A published series may go quiet, so
    a bucket also closes when the wall clock passes its end by a delay
    (:meth:`Timeline.seal`); whichever comes first. ``closed_through[i]`` is
    the end of the last closed bucket of width ``WIDTHS[i]``: every bucket
    that ends at or before it is final, live and in replay alike.

Late points
    A point can be newer than the newest stored one and still fall into a
    bucket the clock already closed (a producer that was cut off for longer
    than the delay sends its backlog). It is stored, served raw and counted in
    the wider buckets that are still open, but left out of the closed one:
    that bucket was already emitted, and changing it afterwards would make
    live subscribers and later replays disagree. Such points are marked per
    width (:attr:`Timeline.late`, sparse: they are rare) and every bucket,
    live or replayed, is computed without them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pulsestream.v1 import timeseries_pb2
from pulsestream_generator.aggregation import WIDTHS, Bucket, aggregate, bucket_start
from pulsestream_generator.history import History
from pulsestream_generator.replay import MAX_POINTS_PER_MESSAGE, raw_chunk
from pulsestream_generator.wire import bucket_point

__all__ = ["Appended", "Closed", "Timeline", "bucket_of"]


@dataclass(frozen=True, slots=True)
class Closed:
    """Buckets of width ``WIDTHS[index]`` that just closed: those starting in ``[lo, hi)`` that hold points."""

    index: int
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class Appended:
    """What one append stored: the points (times ascending), the sequence before them, the buckets it closed."""

    times: Sequence[int]
    values: Sequence[float]
    previous: int
    closed: tuple[Closed, ...]


class Timeline:
    """The points of one published series, oldest first, and the state of its buckets."""

    __slots__ = ("closed_through", "history", "late", "late_points", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.history = History([name])
        #: End of the last closed bucket per width (index into WIDTHS); 0 = none closed yet.
        self.closed_through = [0] * len(WIDTHS)
        #: Late points: timestamp -> bit mask of the widths whose closed bucket leaves them out.
        self.late: dict[int, int] = {}
        #: Points ever marked late (a counter for metrics and tests).
        self.late_points = 0

    # --- reading ----------------------------------------------------------------------------------

    @property
    def newest(self) -> int:
        """Sequence of the newest stored point, 0 when there is none."""
        return self.history.newest or 0

    def __len__(self) -> int:
        return len(self.history)

    def holds_from(self, sequence: int) -> bool:
        return self.history.holds_from(sequence)

    def live_after(self, index: int | None) -> int:
        """The cursor a live-only stream starts after: the newest point (raw) or before the open bucket."""
        if index is None:
            return self.newest
        if self.closed_through[index]:
            return self.closed_through[index] - 1
        newest = self.history.newest
        return bucket_start(newest, WIDTHS[index]) - 1 if newest else 0

    def buckets(self, index: int, lo: int, hi: int) -> list[Bucket]:
        """The buckets of width ``WIDTHS[index]`` starting in ``[lo, hi)``, late points left out."""
        history = self.history
        first, last = history.index_at_or_after(lo), history.index_at_or_after(hi)
        if first >= last:
            return []
        times = history.ticks(first, last)
        values = history.values(self.name, first, last)
        if self.late:
            bit = 1 << index
            kept = [(t, v) for t, v in zip(times, values, strict=True) if not self.late.get(t, 0) & bit]
            times, values = [t for t, _ in kept], [v for _, v in kept]
        return aggregate(times, values, WIDTHS[index])

    def previous_bucket(self, index: int, start: int) -> int:
        """Start of the last non-empty bucket before the one starting at ``start`` (0 if none)."""
        before = self.history.previous(start)
        return bucket_start(before, WIDTHS[index]) if before else 0

    def raw_chunk(
        self, after: int, max_points: int = MAX_POINTS_PER_MESSAGE
    ) -> tuple[timeseries_pb2.SubscribeResponse | None, int]:
        return raw_chunk(self.history, (self.name,), after, max_points)

    def bucket_chunk(
        self, index: int, after: int, max_points: int = MAX_POINTS_PER_MESSAGE
    ) -> tuple[timeseries_pb2.SubscribeResponse | None, int]:
        """The next closed buckets after ``after`` (at most ``max_points``) and the new cursor.

        Only buckets ending at or before ``closed_through`` are final, so only those are replayed; the
        rest reach a stream live, when they close.
        """
        width = WIDTHS[index]
        lo = bucket_start(after, width) + width
        hi = self.closed_through[index]
        history = self.history
        first = history.index_at_or_after(lo)
        if lo >= hi or first >= history.end or history.tick_at(first) >= hi:
            return None, after
        hi = min(hi, bucket_start(history.tick_at(first), width) + max_points * width)
        buckets = self.buckets(index, lo, hi)
        if not buckets:
            return None, after
        previous = self.previous_bucket(index, buckets[0].start)
        points = []
        for bucket in buckets:
            points.append(bucket_point(self.name, bucket, previous))
            previous = bucket.start
        return timeseries_pb2.SubscribeResponse(points=points), buckets[-1].start

    # --- writing ----------------------------------------------------------------------------------

    def append(self, times: Sequence[int], values: Sequence[float], late: Mapping[int, int] | None = None) -> Appended:
        """Store points newer than :attr:`newest` (``times`` strictly increasing); close the buckets they end.

        ``late`` (timestamp -> bit mask of widths) gives the late marks another process decided (a
        shared history records them in its entries, :mod:`.redisstore`); without it they are worked
        out here from :attr:`closed_through`, which gives the same marks for the same sequence of
        appends and seals.
        """
        previous = self.newest
        history = self.history
        if late is not None:
            for t, bits in late.items():
                self.late[t] = self.late.get(t, 0) | bits
                self.late_points += bits.bit_count()
        else:
            self._mark_late(times)
        history.extend(times, {self.name: values})
        newest = times[-1]
        closed = []
        for index, width in enumerate(WIDTHS):
            open_start = bucket_start(newest, width)
            through = self.closed_through[index]
            if open_start > through:
                closed.append(Closed(index, through, open_start))
                self.closed_through[index] = open_start
        return Appended(times, values, previous, tuple(closed))

    def _mark_late(self, times: Sequence[int]) -> None:
        for index, through in enumerate(self.closed_through):
            if times[0] < through:  # a clock-closed bucket: the points before its end are late for it
                bit = 1 << index
                for t in times:
                    if t >= through:
                        break
                    self.late[t] = self.late.get(t, 0) | bit
                    self.late_points += 1

    def due(self, now: int, delay_ms: int) -> list[Closed]:
        """The open buckets the clock closes now: their end passed ``delay_ms`` ago (a series gone quiet)."""
        newest = self.history.newest
        if not newest:
            return []
        due = []
        for index, width in enumerate(WIDTHS):
            start = bucket_start(newest, width)
            if self.closed_through[index] <= start and now >= start + width + delay_ms:
                due.append(Closed(index, start, start + width))
        return due

    def seal(self, now: int, delay_ms: int) -> list[Closed]:
        """Close, by the clock, each open bucket whose end passed ``delay_ms`` ago (a series gone quiet)."""
        closed = self.due(now, delay_ms)
        for entry in closed:
            self.closed_through[entry.index] = entry.hi
        return closed

    def apply_seal(self, index: int, through: int) -> Closed | None:
        """Close the bucket of width ``WIDTHS[index]`` that ends at ``through`` (a seal decided elsewhere)."""
        start = through - WIDTHS[index]
        if self.closed_through[index] > start:
            return None  # closed already (by a point at or after its end)
        self.closed_through[index] = through
        return Closed(index, start, through)

    def starts_after(self, sequence: int) -> None:
        """Say that points up to ``sequence`` existed but are gone (a history loaded from a trimmed log)."""
        history = self.history
        if not len(history) and sequence > history.before_oldest:
            history.before_oldest = sequence

    def trim(self, keep_from: int) -> None:
        """Drop points older than ``keep_from`` (the newest one always stays, for the next point's link)."""
        self.history.trim(keep_from)
        if self.late:
            oldest = self.history.oldest or 0
            self.late = {t: bits for t, bits in self.late.items() if t >= oldest}


def bucket_of(timeline: Timeline, closed: Closed) -> tuple[int, list[Bucket]]:
    """The buckets a :class:`Closed` range holds and the start of the bucket before the first (its link)."""
    buckets = timeline.buckets(closed.index, closed.lo, closed.hi)
    previous = timeline.previous_bucket(closed.index, buckets[0].start) if buckets else 0
    return previous, buckets
