"""Views the streamer builds: buckets of a ladder width the generator does not serve, from one topic.

A :class:`BuiltView` is one (series, width), e.g. ``cpu`` in 500 ms buckets
built from the raw topic, or in 10 s buckets built from the 5s topic
(:func:`~pulsestream_streamer.core.ladder.view_of` picks the source). It costs
no upstream stream of its own: it reads every batch its topic accepts
(:class:`~pulsestream_streamer.fanout.topic.Derived`), rolls it into buckets
(:mod:`~pulsestream_streamer.core.rollup`), keeps them in a ring of its own
and hands each closed bucket, encoded once per format, to its feeds, exactly
as a topic does. To a feed it is a :class:`~pulsestream_streamer.fanout.topic.Source`.

Its history is rebuilt from the topic's ring when the view is made and
whenever that ring is refilled or cleared, so snapshots, resumes and live
points are always the same buckets. Resuming a cursor older than its ring
refills the topic's ring from the generator first.
"""

from __future__ import annotations

import asyncio

from pulsestream_streamer.core.ladder import View
from pulsestream_streamer.core.ring import Ring
from pulsestream_streamer.core.rollup import Roller, rollup
from pulsestream_streamer.core.samples import Sample
from pulsestream_streamer.fanout.audience import Audience, TopicListener
from pulsestream_streamer.fanout.topic import Topic
from pulsestream_streamer.observability import tracing
from pulsestream_streamer.observability.metrics import StreamerMetrics

__all__ = ["BuiltView"]


class BuiltView:
    """One series in buckets of one ladder width, built from ``source``'s points."""

    def __init__(self, series: str, view: View, source: Topic, *, metrics: StreamerMetrics, ring_capacity: int) -> None:
        self.series = series
        self.view = view
        self.resolution = view.name
        self.bucket_ms = view.bucket_ms
        self.source = source
        self.ring = Ring(ring_capacity)
        self._audience = Audience()
        self._metrics = metrics
        self._roller = Roller(view.bucket_ms)
        self._rebuild()
        source.derived.add(self)

    # --- what a feed reads (Source) ---------------------------------------------------------------

    @property
    def ready(self) -> asyncio.Event:
        return self.source.ready

    @property
    def down(self) -> tuple[str, str] | None:
        return self.source.down

    @property
    def trace(self) -> tracing.UpstreamTrace:
        return self.source.trace

    @property
    def listeners(self) -> set[TopicListener]:
        return self._audience.listeners

    def attach(self, listener: TopicListener) -> None:
        self._audience.attach(listener)

    def detach(self, listener: TopicListener) -> None:
        self._audience.detach(listener)

    def close(self) -> None:
        """Stop reading the topic (the hub calls this when the last feed left)."""
        self.source.derived.discard(self)

    async def refill(self, after: int, timeout: float) -> bool:
        """Make the ring hold every bucket after ``after``: refill the topic from the generator, rebuild."""
        if self.ring.covers(after):
            return True
        # The buckets after `after` start at after + width: the topic must hold every point from there on.
        await self.source.refill(after + self.bucket_ms - 1, timeout)
        return self.ring.covers(after)

    # --- what the topic hands over (Derived) ------------------------------------------------------

    def take(self, samples: list[Sample]) -> None:
        closed = self._roller.take(samples)
        if not closed:
            return
        self.ring.append(closed)
        self._audience.hand(self.series, self.resolution, closed, self.bucket_ms, self._metrics)

    def broadcast(self, frame: bytes) -> None:
        self._audience.broadcast(frame)

    def history_changed(self) -> None:
        self._rebuild()
        self._audience.history_changed()

    def _rebuild(self) -> None:
        closed, self._roller = rollup(self.source.ring.since(0), self.bucket_ms)
        self.ring.clear()
        self.ring.append(closed)
