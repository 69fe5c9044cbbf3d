"""The flush loop: when something is pending, at most once per ``flushInterval``, every dirty feed flushes.

A quiet stream sends a point at once, a busy one is batched, and nothing
wakes up while nothing happens. The interval counts from the END of the
previous flush: under overload (a flush longer than the interval) flushes
would otherwise run back to back, starving the upstream reads and the socket
writes they feed (measured at 1M points/s: 43% less CPU, lower p99).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from pulsestream_streamer.core.clock import epoch_ms
from pulsestream_streamer.observability.metrics import StreamerMetrics

__all__ = ["Flushable", "Flusher"]


class Flushable(Protocol):
    """What the loop flushes: a feed."""

    def flush(self, metrics: StreamerMetrics, now_ms: int) -> None: ...


class Flusher:
    """Collects dirty feeds (:meth:`mark`, the feeds' ``on_dirty``) and flushes them in :meth:`run`."""

    def __init__(self, metrics: StreamerMetrics, interval: float) -> None:
        self.metrics = metrics
        #: Seconds between flushes (live setting ``flushInterval``; 0 flushes at every wake-up).
        self.interval = interval
        self._dirty: list[Flushable] = []
        self._wake = asyncio.Event()
        self._flushed: asyncio.Future[None] | None = None

    def mark(self, feed: Flushable) -> None:
        """``feed`` has something to send: flush it at the next flush."""
        self._dirty.append(feed)
        self._wake.set()

    async def run(self) -> None:
        """Flush until cancelled."""
        loop = asyncio.get_running_loop()
        last = 0.0
        while True:
            await self._wake.wait()
            interval = self.interval
            if interval > 0:
                delay = last + interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            self._wake.clear()
            dirty, self._dirty = self._dirty, []
            now_ms = epoch_ms()
            for feed in dirty:
                feed.flush(self.metrics, now_ms)
            flushed, self._flushed = self._flushed, None
            if flushed is not None and not flushed.done():
                flushed.set_result(None)
            last = loop.time()

    async def next_flush(self, timeout: float) -> None:
        """Wait until the next flush has run, or ``timeout`` seconds."""
        if self._flushed is None:
            self._flushed = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._flushed), timeout)
