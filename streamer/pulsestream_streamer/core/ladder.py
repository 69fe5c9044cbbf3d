"""Views: the fixed ladder of bucket widths a stream can be reduced to, how a width is chosen and changed.

A *view* is what a stream's points are: raw ticks (width 0) or buckets of one
width, aligned to wall-clock multiples of it. ``maxPoints=N`` over a window
``W`` picks the smallest ladder width ``>= W / N``, so the window holds at
most ``N`` buckets per series. Widths come from a fixed ladder, not from
``W / N`` itself, so viewers with similar requests (chart widths of 1180 and
1200 pixels) land on the same width and share one feed: the fan-out stays
encode-once.

The ladder is 1-2-5 below a second and clock-friendly above (10 ms .. 1 h);
every width divides an hour, so buckets start on round times::

    10ms 20ms 50ms 100ms 200ms 500ms 1s 2s 5s 10s 15s 30s 1m 2m 5m 10m 15m 30m 1h

A width the generator serves (1s, 5s, 1m) is read as is. Any other is built
by the streamer from the coarsest generator resolution that divides it (2s
and from 1s, 10s/15s/30s from 5s, 2m..1h from 1m, sub-second widths from
raw), with min of mins, max of maxes, count-weighted mean, first of firsts
and last of lasts (:mod:`~pulsestream_streamer.core.rollup`). A bucket's
sequence is its start in epoch milliseconds, the generator's convention for
1s/5s/1m, so cursors of built views are replica-independent too.

Changing width mid-stream (a slow client degraded to a coarser view, or a
degraded client reconnecting) continues from the cursor with no gap and no
overlap (:func:`continuation`): the delivered position ``p`` at width ``a``
covers time up to ``end = p + a``; the next view's first bucket starts at the
first multiple of its width at or after ``end``, and the time between (less
than one new bucket) is sent as points of the old width, which tile it
exactly because a degraded view's width is always a multiple of the old one.
Pure logic, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from pulsestream.spec import RESOLUTIONS

__all__ = [
    "DEGRADE_FACTOR",
    "LADDER_MS",
    "MAX_POINTS",
    "MIN_POINTS",
    "Continuation",
    "View",
    "choose",
    "coarser",
    "continuation",
    "view_of",
    "width_name",
]

#: The widths a stream is reduced to, in milliseconds (see the module docstring).
LADDER_MS: tuple[int, ...] = (
    10,
    20,
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
)

#: The ``maxPoints`` range ``/v1/stream`` accepts.
MIN_POINTS, MAX_POINTS = 10, 10_000

#: A degraded client moves to a width at least this many times its own. An aggregated row is about
#: 2.5x the bytes of a raw one, so the next 1-2-5 rung (x2) would not even lower a raw stream's bytes;
#: x10 cuts them by about 4x for raw and 10x for aggregates, in few steps before the coarsest.
DEGRADE_FACTOR = 10

#: Bucket width of each generator resolution (raw: 0).
GENERATOR_WIDTHS: dict[str, int] = {name: round(seconds * 1000) for name, seconds in RESOLUTIONS.items()}
_BY_WIDTH = {width: name for name, width in GENERATOR_WIDTHS.items()}
# Coarsest first: a built width reads the coarsest generator resolution that divides it.
_SOURCES = sorted(((w, n) for n, w in GENERATOR_WIDTHS.items() if w), reverse=True)


def width_name(bucket_ms: int) -> str:
    """``raw``, ``1s``, ``5s``, ``1m`` for the generator's widths, else a short duration (``200ms``, ``2s``, ``1h``)."""
    if bucket_ms in _BY_WIDTH:
        return _BY_WIDTH[bucket_ms]
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if bucket_ms % size == 0:
            return f"{bucket_ms // size}{unit}"
    return f"{bucket_ms}ms"


@dataclass(frozen=True, slots=True)
class View:
    """What a stream's points are: ``bucket_ms`` wide buckets (0 = raw ticks) read from generator ``source``."""

    bucket_ms: int
    source: str

    @property
    def name(self) -> str:
        """The view's name in events and feeds: the resolution for the generator's own widths."""
        return width_name(self.bucket_ms)

    @property
    def built(self) -> bool:
        """Whether the streamer builds these buckets (the generator does not serve this width)."""
        return self.bucket_ms != GENERATOR_WIDTHS[self.source]


def view_of(bucket_ms: int) -> View:
    """The view of ``bucket_ms`` wide buckets, read from the coarsest generator resolution dividing it."""
    if bucket_ms < 0:
        raise ValueError("bucket width must not be negative")
    for width, name in _SOURCES:
        if bucket_ms % width == 0 and bucket_ms:
            return View(bucket_ms, name)
    return View(bucket_ms, "raw")


def choose(resolution: str, window_ms: int, max_points: int | None, frequency_ms: int) -> View:
    """The view a stream at ``resolution`` gets for ``max_points`` per series over ``window_ms``.

    No ``max_points``, or a ladder width no coarser than what ``resolution`` already gives
    (for raw: the generator's period ``frequency_ms``), means the resolution itself.
    """
    own = view_of(GENERATOR_WIDTHS[resolution])
    if max_points is None:
        return own
    target = -(-window_ms // max_points)  # ceil: the narrowest width that keeps the window within N buckets
    width = next((w for w in LADDER_MS if w >= target), LADDER_MS[-1])
    if width <= (own.bucket_ms or frequency_ms):
        return own
    return view_of(width)


def coarser(view: View, frequency_ms: int) -> View | None:
    """Where a client too slow for ``view`` goes: a ladder width >= 10x, a multiple of it; None at the top."""
    base = view.bucket_ms or max(frequency_ms, LADDER_MS[0])
    for width in LADDER_MS:
        if width >= DEGRADE_FACTOR * base and (view.bucket_ms == 0 or width % view.bucket_ms == 0):
            return view_of(width)
    return None


@dataclass(frozen=True, slots=True)
class Continuation:
    """How a stream delivered at one width continues at another, for one series.

    ``after``: send the new view's points with a sequence above it. ``seam``: the ``[start, end)``
    milliseconds to send first as points of the OLD width (None when the widths line up).
    """

    after: int
    seam: tuple[int, int] | None = None


def _end(position: int, bucket_ms: int) -> int:
    """The first millisecond not covered by a delivery through ``position`` at width ``bucket_ms``."""
    return position + (bucket_ms or 1)


def continuation(position: int, from_ms: int, to_ms: int) -> Continuation | None:
    """Continue a series delivered through ``position`` at width ``from_ms`` with width ``to_ms``.

    Exact (no gap, no overlap) when one width divides the other (raw divides every width);
    None otherwise, and the stream must start over. Position 0 (nothing delivered) stays 0.
    """
    if not position or from_ms == to_ms:
        return Continuation(position)
    if from_ms and to_ms and to_ms % from_ms and from_ms % to_ms:
        return None
    end = _end(position, from_ms)
    boundary = -(-end // to_ms) * to_ms if to_ms else end
    seam = (end, boundary) if boundary > end else None
    return Continuation(boundary - (to_ms or 1), seam)
