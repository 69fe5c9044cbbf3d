"""The producer and the fan-out: one tick loop for all series, many subscribers.

Producer
    One task (:meth:`Hub.run`) wakes at each wall-clock multiple of the
    period, computes every series' value for that tick, appends it to the
    history ring and offers one :class:`TickBatch` to every subscriber. It
    never awaits a subscriber. If it wakes late it produces each missed tick
    in order (bounded by the history span), so sequences stay gap-free. A new
    ``frequency`` takes effect at its next aligned tick, with the sequence
    still increasing.

Subscribers and backpressure
    Each live subscriber has a bounded queue of batches (``bufferSize``
    messages, read live). Its stream sends one message at a time and awaits
    each write, so a slow reader is held back by gRPC's own flow control and
    its queue fills. A subscriber whose queue is full when a new batch comes
    is ended: its queue is dropped at once (memory stays bounded by
    ``bufferSize`` batches per subscriber, shared with everyone else) and its
    stream ends with RESOURCE_EXHAUSTED, telling it the ``after_sequence`` to
    resubscribe with; the history ring then replays what it missed, so the
    client loses nothing and the others never wait for it. (A gap marker
    would instead ask every client to handle holes; ending the stream keeps
    the stream contract simple: in order, no gap, no duplicate, or an error.)

Replay then live
    :meth:`Hub.stream` first reads history chunk by chunk from the request's
    cursor; when a read comes back empty it registers the subscriber in the
    same event-loop step (no await in between), so the first live batch is
    exactly the tick after the last replayed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable

from pulsestream.spec import RESOLUTIONS, StreamSpec
from pulsestream.v1 import timeseries_pb2
from pulsestream_generator.aggregation import Bucket, closed_by, summarise
from pulsestream_generator.clock import align_down, align_up, next_tick, now_ms
from pulsestream_generator.history import History
from pulsestream_generator.metrics import GeneratorMetrics
from pulsestream_generator.query import Query
from pulsestream_generator.replay import bucket_chunk, previous_bucket, raw_chunk
from pulsestream_generator.source import Source
from pulsestream_generator.wire import bucket_point, raw_point

logger = logging.getLogger(__name__)

#: Bucket widths in ms (without "raw").
WIDTHS = tuple(round(seconds * 1000) for seconds in RESOLUTIONS.values() if seconds)
#: History kept beyond the retention: one widest bucket, so a replay from the oldest retained
#: time still starts with a complete bucket.
MARGIN_MS = max(WIDTHS)


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


class TickBatch:
    """Everything one tick produced: raw values and the buckets it closed.

    Responses are built lazily and memoised per (series, resolution), so all
    subscribers asking for the same thing share one message.
    """

    __slots__ = ("_memo", "buckets", "previous", "tick", "values")

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

    def sequence(self, width_ms: int) -> int | None:
        """The sequence this batch carries at a resolution, or ``None`` if nothing."""
        if not width_ms:
            return self.tick
        closed = self.buckets.get(width_ms)
        return closed[0] if closed else None

    def response(self, query: Query) -> timeseries_pb2.SubscribeResponse | None:
        key = (query.series, query.width_ms)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        if query.raw:
            points = [raw_point(name, self.tick, self.values[name], self.previous) for name in query.series]
        else:
            closed = self.buckets.get(query.width_ms)
            if closed is None:
                return None
            _, previous, per_series = closed
            points = [bucket_point(name, per_series[name], previous) for name in query.series]
        response = timeseries_pb2.SubscribeResponse(points=points)
        self._memo[key] = response
        return response


class Subscription:
    """One live subscriber's bounded queue of batches."""

    def __init__(self, query: Query, capacity: Callable[[], int], on_overflow: Callable[[], None]) -> None:
        self.query = query
        self._capacity = capacity
        self._on_overflow = on_overflow
        self._queue: deque[TickBatch] = deque()
        self._ready = asyncio.Event()
        self.ended: tuple[EndReason, int] | None = None

    @property
    def fill(self) -> float:
        return len(self._queue) / max(1, self._capacity())

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, batch: TickBatch) -> None:
        """Queue ``batch`` if it has something for this subscriber; end the subscriber when full."""
        if self.ended is not None:
            return
        if not self.query.raw and self.query.width_ms not in batch.buckets:
            return
        capacity = self._capacity()
        if len(self._queue) >= capacity:
            self.end(EndReason.OVERFLOW, capacity)
            self._on_overflow()
            return
        self._queue.append(batch)
        self._ready.set()

    def end(self, reason: EndReason, detail: int = 0) -> None:
        """End the subscription: drop what is queued and wake the stream."""
        if self.ended is None:
            self.ended = (reason, detail)
            self._queue.clear()
            self._ready.set()

    async def next(self) -> TickBatch:
        """The next batch; raises :class:`_Ended` once the subscription is ended (see :attr:`ended`)."""
        while not self._queue:
            if self.ended is not None:
                raise _Ended
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()


class _Ended(Exception):
    """Internal: the subscription was ended; :meth:`Hub.stream` explains why."""


class Hub:
    """Produces ticks into the history ring and fans them out to subscribers."""

    def __init__(self, source: Source, spec: StreamSpec, metrics: GeneratorMetrics) -> None:
        self.source = source
        self.spec = spec
        self.metrics = metrics
        self.history = History(spec.series)
        self.draining = False
        self._subscriptions: set[Subscription] = set()
        self._widths: Counter[int] = Counter()
        self._last = 0
        self._period_changed = False
        self._wake = asyncio.Event()
        metrics.track_buffer_fill(self.buffer_fill)

    # --- settings ---------------------------------------------------------------------------------

    @property
    def period_ms(self) -> int:
        return self.spec.frequency.millis

    @property
    def retention_ms(self) -> int:
        return self.spec.retention.millis

    @property
    def span_ms(self) -> int:
        """How far back the ring keeps ticks: the retention plus one widest bucket."""
        return self.retention_ms + MARGIN_MS

    @property
    def last_tick(self) -> int:
        return self._last

    def buffer_fill(self) -> float:
        return max((sub.fill for sub in self._subscriptions), default=0.0)

    def apply(self, spec: StreamSpec) -> None:
        """Apply new live settings: frequency at the next aligned tick, the rest at once."""
        old = self.spec
        self.spec = spec
        if spec.frequency.millis != old.frequency.millis:
            self._period_changed = True
            self._wake.set()
        added = [name for name in spec.series if name not in old.series]
        removed = [name for name in old.series if name not in spec.series]
        for name in removed:
            self.history.remove_series(name)
        for name in added:
            self.history.add_series(name, functools.partial(self.source.values, name))
        if removed:
            for sub in list(self._subscriptions):
                if any(name in removed for name in sub.query.series):
                    sub.end(EndReason.SERIES_REMOVED)
        if spec.retention.millis < old.retention.millis and self._last:
            self.history.trim(self._last - self.span_ms)
        logger.info(
            "live settings applied",
            extra={
                "frequency": str(spec.frequency),
                "retention": str(spec.retention),
                "buffer_size": spec.buffer_size,
                "series": ",".join(spec.series),
                "added": ",".join(added),
                "removed": ",".join(removed),
            },
        )

    # --- production -------------------------------------------------------------------------------

    def backfill(self, now: int) -> None:
        """Fill the ring with the history a running generator would hold now (pure function of time).

        A client resuming after a generator restart thus finds every point it
        missed, at the current frequency.
        """
        period = self.period_ms
        last = align_down(now, period)
        first = align_up(last - self.span_ms, period)
        ticks = range(first, last + 1, period)
        values = {name: self.source.values(name, ticks) for name in self.history.series}
        self.history.backfill(ticks, values, before=first - period)
        self._last = last
        logger.info(
            "history backfilled",
            extra={"ticks": len(ticks), "series": len(values), "oldest": first, "newest": last},
        )

    async def run(self) -> None:
        """Produce ticks until cancelled."""
        while True:
            period = self.period_ms
            now = now_ms()
            due = next_tick(self._last, period, now, period_changed=self._period_changed)
            if due > now:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout((due - now) / 1000):
                        await self._wake.wait()
                continue
            self._period_changed = False
            due = max(due, align_up(now - self.span_ms, period))
            while due <= now:
                self.produce(due)
                due += period
            self.metrics.tick_lag.set((now_ms() - self._last) / 1000)

    def produce(self, tick: int) -> None:
        """Produce one tick: compute, record, close buckets, offer to every subscriber."""
        previous = self._last
        history = self.history
        values = {name: self.source.value(name, tick) for name in history.series}
        history.append(tick, values)
        history.trim(tick - self.span_ms)
        buckets: dict[int, tuple[int, int, dict[str, Bucket]]] = {}
        for width, wanted in self._widths.items():
            start = closed_by(previous, tick, width) if width and wanted else None
            if start is None:
                continue
            lo = history.index_at_or_after(start)
            hi = history.index_at_or_after(start + width)
            if lo >= hi:
                continue
            per_series = {name: summarise(start, history.values(name, lo, hi)) for name in history.series}
            buckets[width] = (start, previous_bucket(history, start, width), per_series)
        batch = TickBatch(tick, previous, values, buckets)
        self._last = tick
        for sub in self._subscriptions:
            sub.offer(batch)
        self.metrics.points_produced.inc(len(values))

    # --- subscribers ------------------------------------------------------------------------------

    def drain(self) -> None:
        """End every subscription (their streams end with UNAVAILABLE) and refuse new ones."""
        self.draining = True
        for sub in list(self._subscriptions):
            sub.end(EndReason.DRAINING)

    def _overflowed(self) -> None:
        self.metrics.overflows.inc()
        logger.debug("subscriber overflowed its buffer", extra={"buffer_size": self.spec.buffer_size})

    def _check(self, query: Query, cursor: int) -> None:
        if self.draining:
            raise StreamEnded(
                EndReason.DRAINING,
                f"server draining, reconnect (resume with after_sequence={cursor})",
                after_sequence=cursor,
            )
        gone = [name for name in query.series if name not in self.history.series]
        if gone:
            raise StreamEnded(
                EndReason.SERIES_REMOVED,
                f"series {', '.join(gone)} no longer produced (live settings changed)",
                series=",".join(gone),
            )
        if not self.history.holds_from(query.first_needed(cursor)):
            raise StreamEnded(
                EndReason.REPLAY_BEHIND,
                f"replay fell behind the retention window at sequence {cursor}; resubscribe with a later start",
                last_sequence=cursor,
            )

    def _explain(self, sub: Subscription, cursor: int) -> StreamEnded:
        reason, detail = sub.ended or (EndReason.DRAINING, 0)
        if reason is EndReason.OVERFLOW:
            return StreamEnded(
                reason,
                f"subscriber fell more than {detail} messages behind (bufferSize); "
                f"resubscribe with after_sequence={cursor} to continue without a gap",
                after_sequence=cursor,
                buffer_size=detail,
            )
        if reason is EndReason.SERIES_REMOVED:
            gone = [name for name in sub.query.series if name not in self.spec.series]
            return StreamEnded(
                reason, f"series {', '.join(gone)} no longer produced (live settings changed)", series=",".join(gone)
            )
        return StreamEnded(
            reason, f"server draining, reconnect (resume with after_sequence={cursor})", after_sequence=cursor
        )

    async def stream(self, query: Query) -> AsyncGenerator[timeseries_pb2.SubscribeResponse]:
        """History from the query's cursor, then live batches; raises :class:`StreamEnded` when cut."""
        cursor = query.after
        while True:
            self._check(query, cursor)
            if query.raw:
                response, reached = raw_chunk(self.history, query.series, cursor)
            else:
                response, reached = bucket_chunk(self.history, query.series, query.width_ms, cursor)
            if response is None:
                break
            yield response
            cursor = reached
        # Caught up: register in this same loop step, so the next batch is the next tick.
        sub = Subscription(query, lambda: self.spec.buffer_size, self._overflowed)
        self._subscriptions.add(sub)
        self._widths[query.width_ms] += 1
        lag = self.metrics.send_lag.labels(query.resolution)
        try:
            while True:
                try:
                    batch = await sub.next()
                except _Ended:
                    raise self._explain(sub, cursor) from None
                sequence = batch.sequence(query.width_ms)
                if sequence is None or sequence <= cursor:
                    continue
                response = batch.response(query)
                if response is None:
                    continue
                lag.observe(max(0.0, (now_ms() - sequence) / 1000))
                yield response
                cursor = sequence
        finally:
            self._subscriptions.discard(sub)
            self._widths[query.width_ms] -= 1
