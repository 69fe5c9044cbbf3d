"""Reading history for replay, one bounded chunk at a time (pure: reads the ring, no I/O).

A replaying stream reads a chunk, sends it (waiting on the client's flow
control), and reads the next from the cursor it reached; when a chunk comes
back empty the stream has caught up and switches to live points in the same
event-loop step, so nothing is missed or repeated between the two.

Raw points and buckets use the same ``previous_sequence`` rule as the live
path (:func:`previous_raw`, :func:`previous_bucket`), so a point carries the
same link whichever way it is delivered.
"""

from __future__ import annotations

from collections.abc import Sequence

from pulsestream.v1 import timeseries_pb2
from pulsestream_generator.aggregation import aggregate, bucket_start
from pulsestream_generator.history import History
from pulsestream_generator.wire import bucket_point, raw_point

#: Points per replay message: big enough to catch up fast, small enough (~100 KB) for any client.
MAX_POINTS_PER_MESSAGE = 2048


def previous_raw(history: History, tick: int) -> int:
    """Sequence of the tick before ``tick``, 0 if none."""
    return history.previous(tick)


def previous_bucket(history: History, start: int, width_ms: int) -> int:
    """Start of the last non-empty bucket before the one starting at ``start``, 0 if none."""
    before = history.previous(start)
    return bucket_start(before, width_ms) if before else 0


def raw_chunk(
    history: History, series: Sequence[str], after: int, max_points: int = MAX_POINTS_PER_MESSAGE
) -> tuple[timeseries_pb2.SubscribeResponse | None, int]:
    """The next raw points after ``after`` (tick by tick, every series per tick) and the new cursor."""
    lo = history.index_after(after)
    hi = min(history.end, lo + max(1, max_points // len(series)))
    if lo >= hi:
        return None, after
    ticks = history.ticks(lo, hi)
    columns = [(name, history.values(name, lo, hi)) for name in series]
    previous = history.previous(ticks[0])
    points = []
    for i, tick in enumerate(ticks):
        for name, column in columns:
            points.append(raw_point(name, tick, column[i], previous))
        previous = tick
    return timeseries_pb2.SubscribeResponse(points=points), ticks[-1]


def bucket_chunk(
    history: History, series: Sequence[str], width_ms: int, after: int, max_points: int = MAX_POINTS_PER_MESSAGE
) -> tuple[timeseries_pb2.SubscribeResponse | None, int]:
    """The next closed buckets after ``after`` (bucket by bucket, every series per bucket) and the new cursor.

    A bucket is closed once a tick at or after its end exists, so buckets
    before the one holding the newest tick are final.
    """
    newest = history.newest
    if newest is None:
        return None, after
    first = bucket_start(after, width_ms) + width_ms
    limit = bucket_start(newest, width_ms)
    wanted = max(1, max_points // len(series))
    lo = history.index_at_or_after(first)
    if lo >= history.end:
        return None, after
    # Bound the work by bucket count from the first held tick (history may have gaps).
    end = min(limit, bucket_start(history.tick_at(lo), width_ms) + wanted * width_ms)
    hi = history.index_at_or_after(end)
    if lo >= hi:
        return None, after
    ticks = history.ticks(lo, hi)
    per_series = [(name, aggregate(ticks, history.values(name, lo, hi), width_ms)) for name in series]
    starts = [bucket.start for bucket in per_series[0][1]]
    previous = previous_bucket(history, starts[0], width_ms)
    points = []
    for i, start in enumerate(starts):
        for name, buckets in per_series:
            points.append(bucket_point(name, buckets[i], previous))
        previous = start
    return timeseries_pb2.SubscribeResponse(points=points), starts[-1]
