"""A topic: one (series, resolution) with ONE upstream stream, its order and its history.

However many browsers watch a series at a resolution, the streamer holds one
:class:`Topic` for it: one ``Subscribe`` stream kept alive by
:func:`upstream.follow`, a :class:`~pulsestream_streamer.sequencing.Sequencer`
that keeps its points contiguous, and a :class:`~pulsestream_streamer.ring.Ring`
of recent points for snapshots and resume. Each batch it accepts is encoded
once per format wanted (:func:`shape.fragment`) and handed to its feeds. The
:class:`~pulsestream_streamer.hub.Hub` starts a topic for the first stream
that needs it and stops it ``hub_linger`` after the last one left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from pulsestream.spec import RESOLUTIONS
from pulsestream_streamer import shape, sse, tracing
from pulsestream_streamer.ring import Ring
from pulsestream_streamer.samples import Sample
from pulsestream_streamer.sequencing import Sequencer
from pulsestream_streamer.upstream import Start, follow

if TYPE_CHECKING:
    from pulsestream_streamer.feed import Feed
    from pulsestream_streamer.hub import Hub

__all__ = ["Topic", "epoch_ms"]

logger = logging.getLogger(__name__)


def epoch_ms() -> int:
    """Wall-clock time in epoch milliseconds (the unit of point timestamps and sequences)."""
    return time.time_ns() // 1_000_000


class Topic:
    """One (series, resolution): one upstream stream, its order and its history."""

    def __init__(self, hub: Hub, series: str, resolution: str) -> None:
        self.hub = hub
        self.series = series
        self.resolution = resolution
        self.ring = Ring(hub.settings.ring_capacity)
        self.sequencer = Sequencer()
        self.feeds: set[Feed] = set()
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.linger: asyncio.TimerHandle | None = None
        self.up = False
        self.down: tuple[str, str] | None = None
        now = epoch_ms()
        self.history_ms = hub.settings.max_window.millis
        self.bucket_ms = bucket = round(RESOLUTIONS[resolution] * 1000)
        # History counts as caught up once points this recent arrived (aggregates close a bucket late).
        self.ready_mark = now - 2 * bucket - 2000
        self.refill_lock = asyncio.Lock()
        self.formats: set[shape.Format] = set()
        # Started now, in the context of the connection that creates the topic (see tracing).
        self.trace = tracing.UpstreamTrace(series, resolution, hub.upstream.address)

    # --- TopicSink (called by upstream.follow) ----------------------------------------------------

    def resume_point(self) -> Start:
        if self.sequencer.last:
            return Start(after=self.sequencer.last)
        history = self.history_ms
        retention = self.hub.catalogue.retention_ms
        if retention:
            # Stay clear of the retention edge: it moves while the request travels.
            history = min(history, max(0, retention - 5000))
        if history <= 0:
            return Start()
        return Start(time_ms=epoch_ms() - history)

    def deliver(self, samples: list[Sample]) -> bool:
        accepted = self.sequencer.offer_many(samples) if samples else samples
        metrics = self.hub.metrics
        if accepted:
            self.ring.append(accepted)
            metrics.upstream_points.inc(len(accepted))
            metrics.points_sent.inc(len(accepted) * sum(len(feed.clients) for feed in self.feeds))
            last = accepted[-1]
            encoded = {fmt: shape.fragment(fmt, self.series, accepted, self.resolution) for fmt in self.formats}
            oldest = accepted[0].t + self.bucket_ms  # a bucket's points exist once it closes
            for feed in self.feeds:
                feed.add(self.series, encoded[feed.fmt], last.seq, oldest)
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
            self.hub.metrics.upstream_streams.inc()
            if self.down is not None:
                logger.info("upstream recovered", extra={"series": self.series, "resolution": self.resolution})
                self.trace.recovered()
            self.down = None

    def upstream_down(self, code: str, message: str) -> None:
        if self.up:
            self.up = False
            self.hub.metrics.upstream_streams.dec()
        if self.down is None:
            self.down = (code, message)
            self.trace.down(code, message)
            frame = sse.error_frame(
                "upstream_unavailable",
                f"generator unavailable ({code}); retrying, points resume without gap",
                series=[self.series],
            )
            for feed in self.feeds:
                feed.broadcast(frame)
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
        for feed in self.feeds:
            feed.snapshots.clear()
        self.sequencer = Sequencer()
        frame = sse.error_frame(
            "data_gap",
            "the generator lost points of this series; the chart continues after a hole",
            series=[self.series],
        )
        for feed in self.feeds:
            feed.broadcast(frame)

    async def run(self) -> None:
        """The topic's upstream stream, until cancelled."""
        try:
            with self.trace.active():
                await follow(self.hub.upstream, self, on_reconnect=self._reconnecting)
        finally:
            if self.up:
                self.up = False
                self.hub.metrics.upstream_streams.dec()

    def _reconnecting(self) -> None:
        self.hub.metrics.upstream_reconnects.inc()
        self.trace.reconnecting(self.hub.upstream.address, self.sequencer.last)
