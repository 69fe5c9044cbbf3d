"""Tick arithmetic: ticks sit on wall-clock multiples of the update period.

A tick's time in epoch milliseconds is also its ``sequence`` (the proto's
contract), so every replica gives the same number to the same point and the
number keeps increasing when the period changes.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def align_down(t_ms: int, period_ms: int) -> int:
    """The largest multiple of ``period_ms`` that is ``<= t_ms``."""
    return t_ms - t_ms % period_ms


def align_up(t_ms: int, period_ms: int) -> int:
    """The smallest multiple of ``period_ms`` that is ``>= t_ms``."""
    return -(-t_ms // period_ms) * period_ms


def next_tick(last_ms: int, period_ms: int, now: int, *, period_changed: bool) -> int:
    """When the tick after ``last_ms`` falls.

    Normally the next multiple of the period after the last tick (which may be
    in the past when the producer runs late; it then catches up tick by tick).
    Right after a period change the next aligned tick at or after ``now``:
    a new period takes effect at its next wall-clock multiple and never fills
    in ticks retroactively. Either way the result is ``> last_ms``.
    """
    after = last_ms + 1
    if period_changed:
        after = max(after, now)
    return align_up(after, period_ms)
