"""The feeds that read one source of points (a topic, a view the streamer builds), handed each batch once.

A source hands a batch to its audience once: the points are counted for
every client they reach, encoded once per format some listener wants
(:func:`shape.fragment`), and each listener gets the fragment in its own
format. Out-of-band frames and "history changed" go to every listener too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pulsestream_streamer.core import shape
from pulsestream_streamer.core.samples import Sample
from pulsestream_streamer.observability.metrics import StreamerMetrics

__all__ = ["Audience", "TopicListener"]


class TopicListener(Protocol):
    """What a source needs from a reader of its points (a feed)."""

    @property
    def fmt(self) -> shape.Format: ...

    @property
    def audience(self) -> int:
        """How many clients get what this listener is handed (for the points-sent count)."""
        ...

    def add(self, series: str, fragment: bytes, last_seq: int, oldest_t: int) -> None:
        """New points of one series, encoded in :attr:`fmt`."""
        ...

    def broadcast(self, frame: bytes) -> None:
        """An out-of-band event (upstream trouble, a data gap) for every client now."""
        ...

    def history_changed(self) -> None:
        """The source's ring was refilled or cleared: anything derived from it is stale."""
        ...


class Audience:
    """The listeners of one source and the formats they want."""

    __slots__ = ("formats", "listeners")

    def __init__(self) -> None:
        self.listeners: set[TopicListener] = set()
        self.formats: set[shape.Format] = set()

    def attach(self, listener: TopicListener) -> None:
        self.listeners.add(listener)
        self.formats.add(listener.fmt)

    def detach(self, listener: TopicListener) -> None:
        self.listeners.discard(listener)
        self.formats = {other.fmt for other in self.listeners}

    def hand(
        self, series: str, resolution: str, samples: Sequence[Sample], bucket_ms: int, metrics: StreamerMetrics
    ) -> None:
        """New points (at least one) of ``series``: counted, encoded once per format, handed to every listener."""
        listeners = self.listeners
        metrics.points_sent.inc(len(samples) * sum(listener.audience for listener in listeners))
        encoded = {fmt: shape.fragment(fmt, series, samples, resolution) for fmt in self.formats}
        oldest = samples[0].t + bucket_ms  # a bucket exists once it closes
        last = samples[-1].seq
        for listener in listeners:
            listener.add(series, encoded[listener.fmt], last, oldest)

    def broadcast(self, frame: bytes) -> None:
        for listener in self.listeners:
            listener.broadcast(frame)

    def history_changed(self) -> None:
        for listener in self.listeners:
            listener.history_changed()
