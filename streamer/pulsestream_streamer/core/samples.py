"""One point as the streamer holds it: a small immutable tuple built once from the proto ``Point``.

Upstream rates are low (a few hundred points per second even at a 10 ms
frequency) compared with the fan-out, so clarity wins here: a named tuple
that the ring, the sequencer and the shapers share.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class PointLike(Protocol):
    """The fields of ``pulsestream.v1.Point`` the streamer reads (keeps pure modules free of protobuf)."""

    series: str
    sequence: int
    previous_sequence: int
    value: float
    min: float
    max: float
    mean: float
    count: int
    first: float
    last: float


class Sample(NamedTuple):
    """A point: ``seq`` and ``prev`` from the generator, ``t`` in epoch milliseconds, ``v`` the value.

    Aggregated points (``n`` = the bucket's count, > 0) also carry the bucket statistics.
    """

    seq: int
    prev: int
    t: int
    v: float
    min: float = 0.0
    max: float = 0.0
    mean: float = 0.0
    n: int = 0
    first: float = 0.0
    last: float = 0.0


def from_point(point: PointLike, t_ms: int) -> Sample:
    """Convert a proto point; ``t_ms`` is its timestamp in epoch milliseconds (read by the caller)."""
    if point.count:
        return Sample(
            point.sequence,
            point.previous_sequence,
            t_ms,
            point.value,
            point.min,
            point.max,
            point.mean,
            point.count,
            point.first,
            point.last,
        )
    return Sample(point.sequence, point.previous_sequence, t_ms, point.value)
