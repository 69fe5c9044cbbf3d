"""Aggregation of raw points into wall-clock-aligned buckets (1s, 5s, 1m). Pure functions.

A bucket of width ``w`` covers ``[start, start + w)`` where ``start`` is a
multiple of ``w`` in epoch milliseconds, so buckets line up across series and
replicas. Its sequence and timestamp are its start; its value is the mean.

A bucket *closes* when the first tick at or after its end is produced (ticks
only move forward, so nothing can join it afterwards). When the update period
is longer than the bucket width, this means a bucket is emitted at the next
tick rather than at its end: there is nothing to emit before that anyway.
Live and replayed buckets are computed by the same function from the same
history ring, so a bucket looks the same whichever way it reaches a client.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pulsestream import means
from pulsestream.resolutions import RESOLUTIONS

#: Bucket widths in ms (without "raw"), finest first; a width's index in this tuple names it in bit masks.
WIDTHS = tuple(round(seconds * 1000) for seconds in RESOLUTIONS.values() if seconds)
#: History kept beyond the retention: one widest bucket, so a replay from the oldest retained
#: time still starts with a complete bucket.
MARGIN_MS = max(WIDTHS)


@dataclass(frozen=True, slots=True)
class Bucket:
    """Statistics of the raw points of one series in one bucket."""

    start: int
    count: int
    min: float
    max: float
    mean: float
    first: float
    last: float


def bucket_start(sequence: int, width_ms: int) -> int:
    """Start of the bucket of width ``width_ms`` that holds ``sequence`` (epoch ms)."""
    return sequence - sequence % width_ms


def closed_by(previous_tick: int, tick: int, width_ms: int) -> int | None:
    """Start of the bucket that ``tick`` closes, given the tick before it, or ``None``.

    At most one non-empty bucket can close per tick: every tick between the
    two does not exist.
    """
    if previous_tick <= 0:
        return None
    start = bucket_start(previous_tick, width_ms)
    return start if bucket_start(tick, width_ms) > start else None


def summarise(start: int, values: Sequence[float]) -> Bucket:
    """One bucket's statistics from its values in tick order (at least one)."""
    count = len(values)
    return Bucket(
        start=start,
        count=count,
        min=min(values),
        max=max(values),
        mean=means.mean(math.fsum(values), count),
        first=values[0],
        last=values[-1],
    )


def aggregate(ticks: Sequence[int], values: Sequence[float], width_ms: int) -> list[Bucket]:
    """Group points (ticks ascending, one value each) into buckets, oldest first; empty buckets are skipped."""
    if len(ticks) != len(values):
        raise ValueError("ticks and values differ in length")
    buckets: list[Bucket] = []
    lo = 0
    n = len(ticks)
    while lo < n:
        start = bucket_start(ticks[lo], width_ms)
        end = start + width_ms
        hi = bisect.bisect_left(ticks, end, lo + 1, n)
        buckets.append(summarise(start, values[lo:hi]))
        lo = hi
    return buckets
