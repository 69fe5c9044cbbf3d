"""The bridge: shared upstream topics, feeds that encode once, and the tasks that serve them.

- A :class:`~pulsestream_streamer.fanout.topic.Topic` is one (series,
  resolution): ONE upstream ``Subscribe`` stream however many browsers watch
  it. The first stream that needs it starts it; it stops ``hub_linger`` after
  the last one leaves.
- A :class:`~pulsestream_streamer.fanout.feed.Feed` is what identical streams
  share: (series list, resolution, format). Topics hand it fragments encoded
  once per format; at each flush (:mod:`~pulsestream_streamer.fanout.flush`)
  it joins them into ONE ``points`` event with ONE cursor id, the same
  ``bytes`` for every client's queue.

Joining (:meth:`Hub.open`) happens at a flush boundary: the snapshot holds
every point up to the feed's flushed position, the next ``points`` event
starts right after it, so the join has no gap and no duplicate. Resume by
cursor (:mod:`~pulsestream_streamer.fanout.resume`) serves the points after
the cursor from the ring, refilling it from the generator's history first
when it lacks them, or answers with a ``"reset": true`` snapshot.

The hub owns every task it serves with (flush, sweep, catalogue refresh, one
per topic) in one task group: :meth:`run` returning cancels and awaits them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

from pulsestream.spec import StreamSpec
from pulsestream_streamer.core import sse
from pulsestream_streamer.core.clock import epoch_ms
from pulsestream_streamer.core.request import StreamRequest
from pulsestream_streamer.core.shape import Format
from pulsestream_streamer.fanout.clients import Client, Registry
from pulsestream_streamer.fanout.feed import Feed, FeedKey
from pulsestream_streamer.fanout.flush import Flusher
from pulsestream_streamer.fanout.resume import still_covered, usable_cursor
from pulsestream_streamer.fanout.topic import Topic, upstream_unavailable_frame
from pulsestream_streamer.observability.metrics import StreamerMetrics
from pulsestream_streamer.settings import StreamerSettings
from pulsestream_streamer.upstream.catalogue import LiveCatalogue
from pulsestream_streamer.upstream.channels import Upstream

__all__ = ["Hub"]

logger = logging.getLogger(__name__)

TopicKey = tuple[str, str]

#: Seconds between debug reports of the client and topic counts.
_REPORT_EVERY = 60.0


class Hub:
    """Topics, feeds and the loops that serve them; :meth:`run` owns every task."""

    def __init__(
        self,
        settings: StreamerSettings,
        upstream: Upstream,
        registry: Registry,
        metrics: StreamerMetrics,
        spec: StreamSpec,
    ) -> None:
        self.settings = settings
        self.upstream = upstream
        self.registry = registry
        self.metrics = metrics
        self.catalogue = LiveCatalogue(upstream, spec.series)
        self.flusher = Flusher(metrics, spec.flush_interval.seconds)
        self.topics: dict[TopicKey, Topic] = {}
        self.feeds: dict[FeedKey, Feed] = {}
        self.draining = False
        self._tasks: dict[TopicKey, asyncio.Task[None]] = {}
        self._lingers: dict[TopicKey, asyncio.TimerHandle] = {}
        self._joining: Counter[FeedKey] = Counter()
        self._group: asyncio.TaskGroup | None = None
        self._started = asyncio.Event()
        self.apply(spec)

    def apply(self, spec: StreamSpec) -> None:
        """Apply live settings: flush interval, per-client queue bound, heartbeat, fallback series."""
        self.flusher.interval = spec.flush_interval.seconds
        limits = self.registry.limits
        limits.max_events = spec.buffer_size
        limits.heartbeat = spec.heartbeat_interval.seconds
        self.catalogue.fallback(spec.series)

    # --- loops ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the flush, sweep and catalogue loops and every topic's stream until cancelled."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self.flusher.run(), name="hub-flush")
            group.create_task(self._sweep_loop(), name="hub-sweep")
            group.create_task(self.catalogue.run(), name="hub-catalogue")
            self._started.set()
            try:
                await asyncio.Event().wait()
            finally:
                # Leaving the group cancels and awaits every child: loops and topic streams.
                self._group = None
                for handle in self._lingers.values():
                    handle.cancel()
                self._lingers.clear()

    async def _sweep_loop(self) -> None:
        loop = asyncio.get_running_loop()
        lifetime = sse.retry_frame(self.settings.sse_retry.millis) + sse.error_frame(
            "max_lifetime", "stream reached its maximum lifetime; reconnect with Last-Event-ID to resume"
        )
        last_report = 0.0
        while True:
            await asyncio.sleep(self.settings.sweep_interval.seconds)
            now = loop.time()
            self.registry.sweep(now, sse.HEARTBEAT, lifetime, draining=self.draining)
            if now - last_report >= _REPORT_EVERY:
                last_report = now
                logger.debug("clients", extra={"clients": len(self.registry), "topics": len(self.topics)})

    # --- topics and feeds -------------------------------------------------------------------------

    def _topic(self, series: str, resolution: str) -> Topic:
        key = (series, resolution)
        topic = self.topics.get(key)
        if topic is not None:
            linger = self._lingers.pop(key, None)
            if linger is not None:
                linger.cancel()
            return topic
        if self._group is None:
            raise RuntimeError("hub is not running")
        topic = Topic(
            series,
            resolution,
            upstream=self.upstream,
            metrics=self.metrics,
            ring_capacity=self.settings.ring_capacity,
            history_ms=self.settings.max_window.millis,
            retention_ms=lambda: self.catalogue.current.retention_ms,
        )
        self.topics[key] = topic
        self._tasks[key] = self._group.create_task(topic.run(), name=f"topic-{series}-{resolution}")
        self.metrics.topics.set(len(self.topics))
        logger.debug("topic started", extra={"series": series, "resolution": resolution})
        return topic

    def _feed(self, series: tuple[str, ...], resolution: str, fmt: Format) -> Feed:
        key = (series, resolution, fmt)
        feed = self.feeds.get(key)
        if feed is None:
            topics = [self._topic(name, resolution) for name in series]
            feed = Feed(series, resolution, fmt, topics, on_dirty=self.flusher.mark)
            for topic in topics:
                topic.attach(feed)
            self.feeds[key] = feed
        return feed

    def _release(self, feed: Feed) -> None:
        if feed.clients or self._joining[feed.key] or self.feeds.get(feed.key) is not feed:
            return
        del self.feeds[feed.key]
        for topic in feed.topics:
            topic.detach(feed)
            key = (topic.series, topic.resolution)
            if not topic.listeners and key not in self._lingers:
                loop = asyncio.get_running_loop()
                self._lingers[key] = loop.call_later(self.settings.hub_linger.seconds, self._expire, key, topic)

    def _expire(self, key: TopicKey, topic: Topic) -> None:
        self._lingers.pop(key, None)
        if topic.listeners or self.topics.get(key) is not topic:
            return
        del self.topics[key]
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self.metrics.topics.set(len(self.topics))
        logger.debug("topic stopped", extra={"series": topic.series, "resolution": topic.resolution})

    # --- streams ----------------------------------------------------------------------------------

    async def open(self, client: Client, request: StreamRequest) -> Feed:
        """Attach ``client`` to the feed for ``request``, its first bytes (retry + snapshot) queued.

        From the moment this returns, every flush of the feed reaches the client's queue,
        after the snapshot. The snapshot is only referenced by the queue, so it is freed
        as soon as it is written (a connection never holds its snapshot for its lifetime).
        Returns the feed, which :meth:`close` takes back when the stream ends.
        """
        await self._started.wait()
        feed = self._feed(request.series, request.resolution, request.fmt)
        self._joining[feed.key] += 1
        try:
            await self._wait_ready(feed.topics)
            usable, reason = await usable_cursor(
                feed,
                request,
                retention_ms=self.catalogue.current.retention_ms,
                address=self.upstream.address,
                refill_timeout=self.settings.unary_timeout.seconds,
                catch_up_timeout=self.settings.ready_timeout.seconds,
                next_flush=self.flusher.next_flush,
            )
            if usable and not still_covered(feed, request):
                usable, reason = False, "history moved on while resuming"
            if request.cursor is not None and not usable:
                logger.debug("cursor not usable: %s", reason, extra={"client_id": client.id})
            first = feed.snapshot(
                request,
                self.catalogue.current,
                now_ms=epoch_ms(),
                resumed=usable,
                retry_ms=self.settings.sse_retry.millis,
            )
            for topic in feed.topics:
                if topic.down is not None:
                    first += upstream_unavailable_frame(topic.down[0], topic.series)
            feed.join(client, first)
        finally:
            self._joining[feed.key] -= 1
            if not self._joining[feed.key]:
                del self._joining[feed.key]
            self._release(feed)
        self.metrics.events_sent.labels("snapshot").inc()
        self.metrics.bytes_sent.inc(len(first))
        return feed

    def close(self, client: Client, feed: Feed) -> None:
        """Detach ``client`` from ``feed`` (its writer ended)."""
        feed.leave(client)
        self._release(feed)

    async def _wait_ready(self, topics: Sequence[Topic]) -> None:
        pending = [topic.ready.wait() for topic in topics if not topic.ready.is_set()]
        if pending:
            try:
                await asyncio.wait_for(asyncio.gather(*pending), self.settings.ready_timeout.seconds)
            except TimeoutError:
                logger.debug("snapshot before history arrived", extra={"topics": len(pending)})

    # --- shutdown ---------------------------------------------------------------------------------

    def drain(self) -> None:
        """SIGTERM: tell every client to reconnect (to another pod) and end its stream; refuse new ones."""
        if self.draining:
            return
        self.draining = True
        last = sse.retry_frame(self.settings.shutdown_retry.millis) + sse.error_frame(
            "server_shutdown", "this server is shutting down; reconnect with Last-Event-ID to resume"
        )
        logger.info("draining", extra={"clients": len(self.registry)})
        self.registry.shutdown(last)
