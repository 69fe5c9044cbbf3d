"""A topic: one (series, resolution) with ONE upstream stream, its order and its history.

However many browsers watch a series at a resolution, the streamer holds one
:class:`Topic` for it: one ``Subscribe`` stream kept alive by
:func:`~pulsestream_streamer.upstream.follow.follow`, a
:class:`~pulsestream_streamer.core.sequencing.Sequencer` that keeps its points
contiguous, and a :class:`~pulsestream_streamer.core.ring.Ring` of recent
points for snapshots and resume. Each batch it accepts is encoded once per
format its listeners want (:func:`shape.fragment`) and handed to them.

A topic knows its listeners only through :class:`TopicListener` (what a feed
offers) and :class:`Derived` (a view built from its points, see
:mod:`~pulsestream_streamer.fanout.views`), and the hub that owns it only
through what it was given at construction: it never reaches back.
:class:`Source` is what a feed reads, a topic or a built view alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from pulsestream.spec import RESOLUTIONS
from pulsestream_streamer.core import sse
from pulsestream_streamer.core.clock import epoch_ms
from pulsestream_streamer.core.ring import Ring
from pulsestream_streamer.core.samples import Sample
from pulsestream_streamer.core.sequencing import Sequencer
from pulsestream_streamer.fanout.audience import Audience, TopicListener
from pulsestream_streamer.observability import tracing
from pulsestream_streamer.observability.metrics import StreamerMetrics
from pulsestream_streamer.upstream.channels import Upstream, samples_of
from pulsestream_streamer.upstream.errors import Start, UpstreamError
from pulsestream_streamer.upstream.follow import follow

__all__ = ["Derived", "Source", "Topic", "upstream_unavailable_frame"]

logger = logging.getLogger(__name__)


class Derived(Protocol):
    """What a topic needs from a view built from its points (:class:`~pulsestream_streamer.fanout.views.BuiltView`)."""

    def take(self, samples: list[Sample]) -> None:
        """New points of the topic, in order and contiguous."""
        ...

    def broadcast(self, frame: bytes) -> None: ...

    def history_changed(self) -> None: ...


class Source(Protocol):
    """What a feed reads: one series in one view, with its history (a :class:`Topic` or a built view)."""

    @property
    def series(self) -> str: ...

    @property
    def resolution(self) -> str:
        """The view's name: a generator resolution, or a width the streamer builds (``500ms``)."""
        ...

    @property
    def bucket_ms(self) -> int: ...

    @property
    def ring(self) -> Ring: ...

    @property
    def ready(self) -> asyncio.Event: ...

    @property
    def down(self) -> tuple[str, str] | None: ...

    @property
    def trace(self) -> tracing.UpstreamTrace: ...

    @property
    def listeners(self) -> set[TopicListener]: ...

    def attach(self, listener: TopicListener) -> None: ...

    def detach(self, listener: TopicListener) -> None: ...

    async def refill(self, after: int, timeout: float) -> bool: ...


def upstream_unavailable_frame(code: str, series: str) -> bytes:
    """The event that tells clients a series' upstream is down (sent on the outage and to joiners during it)."""
    return sse.notice_frame(
        "upstream_unavailable",
        f"generator unavailable ({code}); retrying, points resume without gap",
        series=[series],
    )


class Topic:
    """One (series, resolution): one upstream stream, its order and its history."""

    def __init__(
        self,
        series: str,
        resolution: str,
        *,
        upstream: Upstream,
        metrics: StreamerMetrics,
        ring_capacity: int,
        history_ms: int,
        retention_ms: Callable[[], int],
    ) -> None:
        self.series = series
        self.resolution = resolution
        self.ring = Ring(ring_capacity)
        self.sequencer = Sequencer()
        self._audience = Audience()
        #: Views the streamer builds from this topic's points (they count as listeners for lingering).
        self.derived: set[Derived] = set()
        self.ready = asyncio.Event()
        self.up = False
        self.down: tuple[str, str] | None = None
        self._upstream = upstream
        self._metrics = metrics
        self._retention_ms = retention_ms
        self.history_ms = history_ms
        self.bucket_ms = bucket = round(RESOLUTIONS[resolution] * 1000)
        # History counts as caught up once points this recent arrived (aggregates close a bucket late).
        self.ready_mark = epoch_ms() - 2 * bucket - 2000
        self._refill_lock = asyncio.Lock()
        # Started now, in the context of the connection that creates the topic (see tracing).
        self.trace = tracing.UpstreamTrace(series, resolution, upstream.address)

    # --- listeners --------------------------------------------------------------------------------

    @property
    def listeners(self) -> set[TopicListener]:
        return self._audience.listeners

    def attach(self, listener: TopicListener) -> None:
        self._audience.attach(listener)

    def detach(self, listener: TopicListener) -> None:
        self._audience.detach(listener)

    def _history_changed(self) -> None:
        self._audience.history_changed()
        for view in list(self.derived):
            view.history_changed()

    def _broadcast(self, frame: bytes) -> None:
        self._audience.broadcast(frame)
        for view in list(self.derived):
            view.broadcast(frame)

    # --- TopicSink (called by upstream.follow) ----------------------------------------------------

    def resume_point(self) -> Start:
        if self.sequencer.last:
            return Start(after=self.sequencer.last)
        history = self.history_ms
        retention = self._retention_ms()
        if retention:
            # Stay clear of the retention edge: it moves while the request travels.
            history = min(history, max(0, retention - 5000))
        if history <= 0:
            return Start()
        return Start(time_ms=epoch_ms() - history)

    def deliver(self, samples: list[Sample]) -> bool:
        accepted = self.sequencer.offer_many(samples) if samples else samples
        metrics = self._metrics
        if accepted:
            self.ring.append(accepted)
            metrics.upstream_points.inc(len(accepted))
            self._audience.hand(self.series, self.resolution, accepted, self.bucket_ms, metrics)
            last = accepted[-1]
            for view in self.derived:
                view.take(accepted)
            if not self.ready.is_set() and last.t >= self.ready_mark:
                self.ready.set()
        if self.sequencer.duplicates:
            metrics.duplicates.inc(self.sequencer.duplicates)
            self.sequencer.duplicates = 0
        if self.sequencer.gap:
            self.sequencer.clear_held()
            return False
        return True

    def upstream_up(self) -> None:
        if not self.up:
            self.up = True
            self._metrics.upstream_streams.inc()
            if self.down is not None:
                logger.info("upstream recovered", extra={"series": self.series, "resolution": self.resolution})
                self.trace.recovered()
            self.down = None

    def upstream_down(self, code: str, message: str) -> None:
        if self.up:
            self.up = False
            self._metrics.upstream_streams.dec()
        if self.down is None:
            self.down = (code, message)
            self.trace.down(code, message)
            self._broadcast(upstream_unavailable_frame(code, self.series))
        if not self.ready.is_set() and len(self.ring):
            self.ready.set()

    def start_lost(self, message: str) -> None:
        if not self.sequencer.last:
            # A window start the generator refused (less history than asked for): ask for less.
            self.history_ms //= 2
            logger.info("history start refused, asking for %d ms: %s", self.history_ms, message)
            return
        logger.warning(
            "upstream no longer holds our resume point; restarting from the window",
            extra={"series": self.series, "after": self.sequencer.last, "reason": message},
        )
        self.ring.clear()
        self._history_changed()
        self.sequencer = Sequencer()
        self._broadcast(
            sse.notice_frame(
                "data_gap",
                "the generator lost points of this series; the chart continues after a hole",
                series=[self.series],
            )
        )

    # --- the stream, and history for resuming clients ---------------------------------------------

    async def run(self) -> None:
        """The topic's upstream stream, until cancelled."""
        try:
            with self.trace.active():
                await follow(self._upstream, self, on_reconnect=self._reconnecting)
        finally:
            if self.up:
                self.up = False
                self._metrics.upstream_streams.dec()

    def _reconnecting(self) -> None:
        self._metrics.upstream_reconnects.inc()
        self.trace.reconnecting(self._upstream.address, self.sequencer.last)

    async def refill(self, after: int, timeout: float) -> bool:
        """Load the points after ``after`` that the ring lacks from the generator's history.

        For a client resuming from a cursor older than what the ring holds (a restarted
        streamer, another replica's cursor). Returns whether the ring now covers ``after``;
        the points are prepended only when they join the ring's oldest point exactly.
        """
        async with self._refill_lock:
            ring = self.ring
            if ring.covers(after):
                return True
            floor = ring.floor
            if floor is None:
                return False
            collected: list[Sample] = []
            limit = ring.capacity - len(ring)
            stream = self._upstream.subscribe([self.series], self.resolution, Start(after=after))
            try:
                async with asyncio.timeout(timeout):
                    async for response in stream:
                        batch = samples_of(response, self.series)
                        collected.extend(s for s in batch if s.seq <= floor)
                        if len(collected) > limit:
                            return False
                        if batch and batch[-1].seq >= floor:
                            break
            except (UpstreamError, TimeoutError) as error:
                logger.debug("refill failed: %s", error, extra={"series": self.series, "after": after})
                return False
            finally:
                await stream.aclose()
            if not collected or collected[-1].seq != floor:
                return False
            ring.prepend(collected)
            self._history_changed()
            logger.debug("ring refilled", extra={"series": self.series, "after": after, "points": len(collected)})
            return ring.covers(after)
