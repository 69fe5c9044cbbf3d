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

- A :class:`~pulsestream_streamer.fanout.views.BuiltView` is one (series,
  width) that the generator does not serve (``maxPoints``): buckets the
  streamer builds from a topic's points, with no upstream stream of its own.

Joining (:meth:`Hub.open`) happens at a flush boundary: the snapshot holds
every point up to the feed's flushed position, the next ``points`` event
starts right after it, so the join has no gap and no duplicate. Resume by
cursor (:mod:`~pulsestream_streamer.fanout.resume`) serves the points after
the cursor from the ring, refilling it from the generator's history first
when it lacks them, or answers with a ``"reset": true`` snapshot.

Degradation: a client whose queue passes half a bound is moved to a coarser
view (:func:`~pulsestream_streamer.core.ladder.coarser`) the same way, as a
join with its own position as the cursor: a ``degraded`` notice, then a
``resumed`` snapshot of what it missed at the new width (after a seam of the
old width, so nothing is missing or repeated), then the new feed's events.
Only a client already at the coarsest width, or one that cannot be moved, is
cut as a slow consumer.

The hub owns every task it serves with (flush, sweep, catalogue refresh, one
per topic) in one task group: :meth:`run` returning cancels and awaits them all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping, Sequence

from pulsestream.spec import StreamSpec
from pulsestream_streamer.core import ladder, sse
from pulsestream_streamer.core.clock import epoch_ms
from pulsestream_streamer.core.cursor import Cursor
from pulsestream_streamer.core.request import StreamRequest
from pulsestream_streamer.core.shape import Format
from pulsestream_streamer.fanout.clients import SLOW_CONSUMER, Client, Registry
from pulsestream_streamer.fanout.feed import Feed, FeedKey
from pulsestream_streamer.fanout.flush import Flusher
from pulsestream_streamer.fanout.resume import still_covered, usable_cursor
from pulsestream_streamer.fanout.snapshots import Joining
from pulsestream_streamer.fanout.topic import Source, Topic, upstream_unavailable_frame
from pulsestream_streamer.fanout.views import BuiltView
from pulsestream_streamer.observability.metrics import StreamerMetrics
from pulsestream_streamer.settings import StreamerSettings
from pulsestream_streamer.upstream.catalogue import LiveCatalogue
from pulsestream_streamer.upstream.channels import Upstream

__all__ = ["Hub"]

logger = logging.getLogger(__name__)

TopicKey = tuple[str, str]


@dataclasses.dataclass(slots=True)
class Member:
    """One client's place in the fan-out: the request it made and the feed it reads now."""

    client: Client
    request: StreamRequest
    feed: Feed
    closed: bool = False


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
        self.views: dict[TopicKey, BuiltView] = {}
        self.feeds: dict[FeedKey, Feed] = {}
        self.members: dict[str, Member] = {}
        self.draining = False
        self._tasks: dict[TopicKey, asyncio.Task[None]] = {}
        self._lingers: dict[TopicKey, asyncio.TimerHandle] = {}
        self._joining: Counter[FeedKey] = Counter()
        self._group: asyncio.TaskGroup | None = None
        self._started = asyncio.Event()
        self._on_behind = self._behind
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

    def _source(self, series: str, view: ladder.View) -> Source:
        """The topic for a generator resolution, or the built view of a width it does not serve."""
        if not view.built:
            return self._topic(series, view.source)
        key = (series, view.name)
        built = self.views.get(key)
        if built is None:
            topic = self._topic(series, view.source)
            built = BuiltView(series, view, topic, metrics=self.metrics, ring_capacity=self.settings.ring_capacity)
            self.views[key] = built
            self.metrics.views.set(len(self.views))
        return built

    def _feed(self, series: tuple[str, ...], view: ladder.View, fmt: Format) -> Feed:
        key = (series, view.name, fmt)
        feed = self.feeds.get(key)
        if feed is None:
            topics = [self._source(name, view) for name in series]
            feed = Feed(series, view.name, fmt, topics, on_dirty=self.flusher.mark)
            for topic in topics:
                topic.attach(feed)
            self.feeds[key] = feed
            self.metrics.feeds.set(len(self.feeds))
        return feed

    def _release(self, feed: Feed) -> None:
        if feed.clients or self._joining[feed.key] or self.feeds.get(feed.key) is not feed:
            return
        del self.feeds[feed.key]
        self.metrics.feeds.set(len(self.feeds))
        for source in feed.topics:
            source.detach(feed)
            key = (source.series, source.resolution)
            built = self.views.get(key)
            if built is source:  # a view the streamer builds: gone with its last feed; its topic may linger
                if built.listeners:
                    continue
                del self.views[key]
                self.metrics.views.set(len(self.views))
                built.close()
                key = (built.source.series, built.source.resolution)
            topic = self.topics.get(key)
            if topic is not None and not topic.listeners and not topic.derived and key not in self._lingers:
                loop = asyncio.get_running_loop()
                self._lingers[key] = loop.call_later(self.settings.hub_linger.seconds, self._expire, key, topic)

    def _expire(self, key: TopicKey, topic: Topic) -> None:
        self._lingers.pop(key, None)
        if topic.listeners or topic.derived or self.topics.get(key) is not topic:
            return
        del self.topics[key]
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self.metrics.topics.set(len(self.topics))
        logger.debug("topic stopped", extra={"series": topic.series, "resolution": topic.resolution})

    # --- streams ----------------------------------------------------------------------------------

    async def open(self, client: Client, request: StreamRequest) -> Feed:
        """Attach ``client`` to the feed for ``request``, its first event (retry + snapshot) primed.

        From the moment this returns, every flush of the feed reaches the client's queue,
        after the snapshot. The snapshot is written in pieces as the socket takes them, so a
        connection never holds its whole snapshot (nor keeps it for its lifetime).
        Returns the feed; :meth:`close` takes the client back when the stream ends.
        """
        await self._started.wait()
        feed, _ = await self._join(client, request, retry=True)
        assert feed is not None
        self.members[client.id] = Member(client, request, feed)
        client.on_behind = self._on_behind  # one bound method for every client: no closure per connection
        return feed

    async def _join(
        self,
        client: Client,
        request: StreamRequest,
        *,
        retry: bool,
        before: bytes = b"",
        seams: Mapping[str, Source] | None = None,
    ) -> tuple[Feed | None, bool]:
        """Join ``client`` to ``request``'s feed with its snapshot; returns the feed and whether it resumed.

        With ``seams`` (a degrade) an unusable cursor joins nothing: (None, False).
        """
        feed = self._feed(request.series, request.view, request.fmt)
        self._joining[feed.key] += 1
        try:
            await self._wait_ready(feed.topics)
            plans, reason = await usable_cursor(
                feed,
                request,
                retention_ms=self.catalogue.current.retention_ms,
                address=self.upstream.address,
                refill_timeout=self.settings.unary_timeout.seconds,
                catch_up_timeout=self.settings.ready_timeout.seconds,
                next_flush=self.flusher.next_flush,
                seams=seams,
            )
            if plans is not None and not still_covered(feed, plans, seams):
                plans, reason = None, "history moved on while resuming"
            if request.cursor is not None and plans is None:
                logger.debug("cursor not usable: %s", reason, extra={"client_id": client.id})
                if seams is not None:
                    return None, False
            if client.closing:
                return (feed, False) if seams is None else (None, False)
            after = b"".join(
                upstream_unavailable_frame(topic.down[0], topic.series) for topic in feed.topics if topic.down
            )
            first = feed.snapshot(
                request,
                self.catalogue.current,
                now_ms=epoch_ms(),
                joining=Joining(plans is not None, plans, seams, before, after, retry),
                retry_ms=self.settings.sse_retry.millis,
                piece_bytes=client.limits.write_buffer or 64 * 1024,
            )
            feed.join(client, first)
        finally:
            self._joining[feed.key] -= 1
            if not self._joining[feed.key]:
                del self._joining[feed.key]
            self._release(feed)
        self.metrics.events_sent.labels("snapshot").inc()
        return feed, plans is not None

    def close(self, client: Client, feed: Feed | None = None) -> None:
        """Detach ``client`` from the feed it reads (its writer ended)."""
        member = self.members.pop(client.id, None)
        if member is not None:
            member.closed = True
            feed = member.feed
        if feed is not None:
            feed.leave(client)
            self._release(feed)

    # --- degradation ------------------------------------------------------------------------------

    def _behind(self, client: Client) -> None:
        """``client``'s queue passed half a bound: move it to a coarser view, in a task of the hub's."""
        member = self.members.get(client.id)
        if self._group is None or member is None or member.closed or self.draining:
            return
        view = ladder.coarser(member.feed.view, self.catalogue.current.frequency_ms)
        if view is None or member.client.position is None:
            return  # at the coarsest width already (or nothing sent yet): cut at the full bound as before
        self._group.create_task(self._degrade(member, view), name=f"degrade-{member.client.id}")

    async def _degrade(self, member: Member, view: ladder.View) -> None:
        try:
            await self._move(member, view)
        except Exception:  # a failed move must not stop the hub: the client is cut as before
            logger.exception("degrading a client failed", extra={"client_id": member.client.id})
            member.client.drop(SLOW_CONSUMER, "slow_consumer")

    async def _move(self, member: Member, view: ladder.View) -> None:
        client, old = member.client, member.feed
        position = client.position
        assert position is not None
        dropped = client.rewind()
        old.leave(client)
        self._joining[old.key] += 1  # the old view's ring fills the seam: keep it until the client moved
        request = dataclasses.replace(
            member.request, reduced=view, cursor=Cursor(old.resolution, dict(position)), cursor_error=None
        )
        notice = sse.error_frame(
            "degraded",
            f"this client fell behind; points now arrive in {view.name} buckets (min/max/mean/count)",
            bucketMs=view.bucket_ms,
            resolution=view.name,
            reason="queue_behind",
        )
        try:
            seams = {source.series: source for source in old.topics}
            feed, resumed = await self._join(client, request, retry=False, before=notice, seams=seams)
        finally:
            self._joining[old.key] -= 1
            if not self._joining[old.key]:
                del self._joining[old.key]
            self._release(old)
        if member.closed or client.closing:
            if feed is not None:
                feed.leave(client)
                self._release(feed)
            return
        if feed is None or not resumed:
            client.drop(SLOW_CONSUMER, "slow_consumer")
            return
        member.feed, member.request = feed, request
        client.caught_up()
        self.metrics.degradations.labels(view.name).inc()
        logger.info(
            "client degraded",
            extra={"client_id": client.id, "from": old.resolution, "to": view.name, "dropped_events": dropped},
        )

    async def _wait_ready(self, topics: Sequence[Source]) -> None:
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
