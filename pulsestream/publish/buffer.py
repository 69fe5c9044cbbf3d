"""The producer's bounded buffer: points recorded, not yet acknowledged. Pure (a lock, no I/O, no loop).

Recording stamps a point at once (``t`` = the caller's clock in epoch ms
when it gives none, nudged to stay strictly increasing per series), so
resending it after a failure sends the very same (series, timestamp), which
the generator stores once: retries never duplicate. A series holds at most
one point per millisecond; a series recorded faster than 1,000 times a
second runs ahead of the clock (the generator refuses timestamps more than a
minute ahead).

The buffer holds at most ``capacity`` points, the batch in flight included.
When it is full, :meth:`Buffer.record` applies the overflow policy:

- ``drop-oldest`` (the default): the oldest point not yet sent is dropped
  to make room, so what reaches the dashboard after an outage is the most
  recent data, and the producer never waits;
- ``drop-newest``: the new point is dropped;
- ``error``: :class:`BufferFull` is raised to the caller;

and :meth:`Buffer.put` (used by the CLI, and by ``AsyncPublisher.put``)
waits for room instead, pushing back on whoever produces the points. Every
dropped point is counted (:attr:`Buffer.dropped`).

Several threads may record at once (the sync ``Publisher`` records from any
thread); one sender takes batches (:meth:`Buffer.take`) and settles them
(:meth:`Buffer.settle` when acknowledged, :meth:`Buffer.giveback` to resend).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

from pulsestream.spec import SERIES_NAME_PATTERN

__all__ = ["Buffer", "BufferFull", "Overflow", "Point", "check_point", "now_ms"]

Overflow = Literal["drop-oldest", "drop-newest", "error"]
#: (series, timestamp in epoch ms, value)
Point = tuple[str, int, float]

_NAME = re.compile(SERIES_NAME_PATTERN)


class BufferFull(Exception):
    """The buffer is full and its policy is ``error``: the point was not recorded."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_point(series: str, value: float) -> float:
    """``value`` as a float; ``ValueError`` for a point the generator would refuse whatever its time."""
    if not isinstance(series, str) or not _NAME.match(series):
        raise ValueError(
            f"series name {series!r} breaks the rules: a letter, then letters, digits and _ . : / ; = ~ -, "
            "at most 128 characters"
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"value {value!r} of {series!r} is not a number") from None
    if number - number != 0:
        raise ValueError(f"value {value!r} of {series!r} is not a finite number")
    return number


class Buffer:
    """Points waiting to be sent, oldest first, and the batch being sent."""

    def __init__(
        self, capacity: int, overflow: Overflow = "drop-oldest", wake: Callable[[], object] = lambda: None
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.overflow: Overflow = overflow
        self._wake = wake
        self._waiting: deque[Point] = deque()
        self._in_flight = 0
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        #: When the oldest waiting point was recorded (monotonic seconds), for the linger deadline.
        self.oldest_at = 0.0
        self.recorded = 0
        self.dropped = 0
        self.batch_size = 1

    def __len__(self) -> int:
        """Points waiting (not in flight)."""
        return len(self._waiting)

    @property
    def held(self) -> int:
        """Points held: waiting and in flight."""
        return len(self._waiting) + self._in_flight

    def _stamp(self, series: str, t: int | None) -> int:
        if t is not None:
            return int(t)
        stamp = now_ms()
        last = self._last.get(series, 0)
        if stamp <= last:
            stamp = last + 1
        self._last[series] = stamp
        return stamp

    def _append(self, point: Point) -> None:
        if not self._waiting:
            self.oldest_at = time.monotonic()
        self._waiting.append(point)
        self.recorded += 1
        size = len(self._waiting)
        if size in (1, self.batch_size):
            self._wake()

    def record(self, series: str, value: float, t: int | None = None) -> bool:
        """Add a point without waiting; ``False`` when the policy dropped it (``drop-newest``)."""
        number = check_point(series, value)
        with self._lock:
            if self.held >= self.capacity:
                if self.overflow == "error":
                    raise BufferFull(f"{self.capacity} points held, none acknowledged yet (overflow policy: error)")
                if self.overflow == "drop-newest" or not self._waiting:
                    self.dropped += 1
                    return False
                self._waiting.popleft()  # drop-oldest (the batch in flight is never dropped)
                self.dropped += 1
            self._append((series, self._stamp(series, t), number))
            return True

    def put(self, series: str, value: float, t: int | None = None, timeout: float | None = None) -> bool:
        """Add a point, waiting (up to ``timeout`` s) for room; ``False`` when none came in time."""
        number = check_point(series, value)
        with self._room:
            if not self._room.wait_for(lambda: self.held < self.capacity, timeout):
                return False
            self._append((series, self._stamp(series, t), number))
            return True

    def has_room(self) -> bool:
        with self._lock:
            return self.held < self.capacity

    def take(self, limit: int) -> list[Point]:
        """The next batch (at most ``limit`` oldest waiting points), now in flight."""
        with self._lock:
            count = min(limit, len(self._waiting))
            batch = [self._waiting.popleft() for _ in range(count)]
            self._in_flight += count
            if self._waiting:
                self.oldest_at = time.monotonic()
            return batch

    def settle(self, count: int) -> None:
        """``count`` points of the batch in flight are done with (acknowledged, or dropped as refused)."""
        with self._room:
            self._in_flight = max(0, self._in_flight - count)
            self._room.notify_all()

    def giveback(self, points: list[Point]) -> None:
        """Points of the batch in flight go back to the front, to be sent first (too many for one request)."""
        with self._room:
            self._waiting.extendleft(reversed(points))
            self._in_flight = max(0, self._in_flight - len(points))
