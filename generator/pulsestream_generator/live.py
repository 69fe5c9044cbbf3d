"""What live subscribers are handed, and their bounded queues.

Two kinds of live item reach a subscriber's queue:

- a :class:`TickBatch`: everything one synthetic tick produced (all
  synthetic series share the tick);
- a :class:`PublishedItem`: one published series' points stored by one
  batch (or buckets the clock closed), fanned out at publish time, not at
  the next tick.

Each item knows which timeline it advances (:attr:`key`: ``""`` for the
synthetic tick, else the published series' name), the sequence it brings a
stream to at a resolution, and builds its response lazily, memoised per
(series, resolution), so all subscribers asking for the same thing share
one message.

A :class:`Subscription` is one live subscriber's queue of items, bounded by
``bufferSize``: a subscriber whose queue is full when an item comes is ended
at once (its queue freed), and its stream ends with RESOURCE_EXHAUSTED and
the cursor to resume from (see :mod:`.hub`).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from pulsestream.v1 import timeseries_pb2
from pulsestream_generator.aggregation import Bucket
from pulsestream_generator.query import Query
from pulsestream_generator.wire import bucket_point, raw_point

__all__ = ["SYNTHETIC", "EndReason", "LiveItem", "PublishedItem", "StreamEnded", "Subscription", "TickBatch"]

#: The key of the synthetic timeline (no series is named "").
SYNTHETIC = ""


class EndReason(enum.Enum):
    """Why the hub ended a stream (the servicer maps each to a gRPC status)."""

    OVERFLOW = "overflow"
    REPLAY_BEHIND = "replay-behind"
    DRAINING = "draining"
    SERIES_REMOVED = "series-removed"


class StreamEnded(Exception):
    """The hub ended a stream; ``str()`` is the message for people, ``metadata`` the same facts as data.

    ``metadata`` becomes the ErrorInfo metadata of the status (:mod:`pulsestream.refusals`), e.g. the
    ``after_sequence`` to resume from without a gap.
    """

    def __init__(self, reason: EndReason, message: str, **metadata: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = metadata


class LiveItem(Protocol):
    """What a subscription queues: a step of one timeline."""

    @property
    def key(self) -> str: ...

    def wanted(self, query: Query) -> bool:
        """Whether this item carries anything for ``query`` (else it is not queued at all)."""
        ...

    def sequence(self, width_ms: int) -> int | None:
        """The last sequence this item carries at a resolution, or ``None`` if nothing."""
        ...

    def response(self, query: Query, after: int) -> timeseries_pb2.SubscribeResponse | None:
        """The message for ``query``, holding only what comes after the stream's cursor ``after``."""
        ...


class TickBatch:
    """Everything one synthetic tick produced: raw values and the buckets it closed."""

    __slots__ = ("_memo", "buckets", "previous", "tick", "values")

    key = SYNTHETIC

    def __init__(
        self,
        tick: int,
        previous: int,
        values: dict[str, float],
        buckets: dict[int, tuple[int, int, dict[str, Bucket]]],
    ) -> None:
        self.tick = tick
        self.previous = previous
        self.values = values
        #: width -> (bucket start, previous bucket start, bucket per series)
        self.buckets = buckets
        self._memo: dict[tuple[tuple[str, ...], int], timeseries_pb2.SubscribeResponse] = {}

    def wanted(self, query: Query) -> bool:
        return bool(query.synthetic) and (query.raw or query.width_ms in self.buckets)

    def sequence(self, width_ms: int) -> int | None:
        if not width_ms:
            return self.tick
        closed = self.buckets.get(width_ms)
        return closed[0] if closed else None

    def response(self, query: Query, after: int) -> timeseries_pb2.SubscribeResponse | None:
        key = (query.synthetic, query.width_ms)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        if query.raw:
            points = [raw_point(name, self.tick, self.values[name], self.previous) for name in query.synthetic]
        else:
            closed = self.buckets.get(query.width_ms)
            if closed is None:
                return None
            _, previous, per_series = closed
            points = [bucket_point(name, per_series[name], previous) for name in query.synthetic]
        response = timeseries_pb2.SubscribeResponse(points=points)
        self._memo[key] = response
        return response


class PublishedItem:
    """Points one batch stored in one published series, and the buckets that closed (by data or clock)."""

    __slots__ = ("_memo", "buckets", "key", "previous", "times", "values")

    def __init__(
        self,
        key: str,
        times: Sequence[int],
        values: Sequence[float],
        previous: int,
        buckets: dict[int, tuple[int, list[Bucket]]],
    ) -> None:
        self.key = key
        self.times = times
        self.values = values
        self.previous = previous
        #: width -> (start of the bucket before the first, the closed buckets in order)
        self.buckets = buckets
        self._memo: dict[int, timeseries_pb2.SubscribeResponse] = {}

    def wanted(self, query: Query) -> bool:
        return bool(self.times) if query.raw else query.width_ms in self.buckets

    def sequence(self, width_ms: int) -> int | None:
        if not width_ms:
            return self.times[-1] if self.times else None
        closed = self.buckets.get(width_ms)
        return closed[1][-1].start if closed else None

    def response(self, query: Query, after: int) -> timeseries_pb2.SubscribeResponse | None:
        """The points (or buckets) of this item for ``query``; those at or before ``after`` left out.

        A live stream's cursor is normally before every item it is handed (it registered once caught
        up), and the message is built once for all. With a shared history a stream may resume on a
        replica whose mirror is still behind its cursor: then the first items straddle the cursor,
        and only what is after it is sent (built for that stream alone), so nothing comes twice.
        """
        width = query.width_ms
        cached = self._memo.get(width)
        if cached is not None and self._first(width) > after:
            return cached
        points = []
        if not width:
            previous = self.previous
            for t, v in zip(self.times, self.values, strict=True):
                if t > after:
                    points.append(raw_point(self.key, t, v, previous))
                previous = t
        else:
            closed = self.buckets.get(width)
            if closed is None:
                return None
            previous, buckets = closed
            for bucket in buckets:
                if bucket.start > after:
                    points.append(bucket_point(self.key, bucket, previous))
                previous = bucket.start
        response = timeseries_pb2.SubscribeResponse(points=points)
        if self._first(width) > after:
            self._memo[width] = response
        return response

    def _first(self, width: int) -> int:
        if not width:
            return self.times[0] if self.times else 0
        closed = self.buckets.get(width)
        return closed[1][0].start if closed and closed[1] else 0


class Subscription:
    """One live subscriber's bounded queue of items."""

    def __init__(self, query: Query, capacity: Callable[[], int], on_overflow: Callable[[], None]) -> None:
        self.query = query
        self._capacity = capacity
        self._on_overflow = on_overflow
        self._queue: deque[LiveItem] = deque()
        self._ready = asyncio.Event()
        self.ended: tuple[EndReason, int] | None = None

    @property
    def fill(self) -> float:
        return len(self._queue) / max(1, self._capacity())

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, item: LiveItem) -> None:
        """Queue ``item`` if it has something for this subscriber; end the subscriber when full."""
        if self.ended is not None or not item.wanted(self.query):
            return
        capacity = self._capacity()
        if len(self._queue) >= capacity:
            self.end(EndReason.OVERFLOW, capacity)
            self._on_overflow()
            return
        self._queue.append(item)
        self._ready.set()

    def end(self, reason: EndReason, detail: int = 0) -> None:
        """End the subscription: drop what is queued and wake the stream."""
        if self.ended is None:
            self.ended = (reason, detail)
            self._queue.clear()
            self._ready.set()

    async def next(self) -> LiveItem:
        """The next item; raises :class:`Ended` once the subscription is ended (see :attr:`ended`)."""
        while not self._queue:
            if self.ended is not None:
                raise Ended
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()


class Ended(Exception):
    """The subscription was ended; :meth:`~.hub.Hub.stream` explains why."""
