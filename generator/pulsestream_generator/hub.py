"""The producer and the fan-out: one tick loop for the synthetic series, published points, many subscribers.

Producer
    One task (:meth:`Hub.run`) wakes at each wall-clock multiple of the
    period, computes every synthetic series' value for that tick, appends it
    to the history ring and offers one :class:`~.live.TickBatch` to every
    subscriber of a synthetic series. It never awaits a subscriber. If it
    wakes late it produces each missed tick in order (bounded by the history
    span), so sequences stay gap-free. A new ``frequency`` takes effect at its
    next aligned tick, with the sequence still increasing.

Published series
    Points producers publish land in the published store
    (:mod:`.publishedstore`), one timeline per series. Each run of points a
    batch stores is fanned out at once, from inside the append
    (:meth:`Hub._stored`), as a :class:`~.live.PublishedItem` to the
    subscribers of that series only: a published point reaches a subscriber
    without waiting for a tick. A second task (:meth:`Hub.maintain`) closes
    the buckets of series gone quiet (the wall clock passed a bucket's end by
    ``GENERATOR_INGEST_CLOSE_DELAY``), fans those out too, and trims the
    timelines to the retention.

Subscribers and backpressure
    Each live subscriber has a bounded queue of items (``bufferSize``
    messages, read live). Its stream sends one message at a time and awaits
    each write, so a slow reader is held back by gRPC's own flow control and
    its queue fills. A subscriber whose queue is full when a new item comes
    is ended: its queue is dropped at once (memory stays bounded by
    ``bufferSize`` items per subscriber, shared with everyone else) and its
    stream ends with RESOURCE_EXHAUSTED, telling it the ``after_sequence`` to
    resubscribe with; the history then replays what it missed, so the
    client loses nothing and the others never wait for it. (A gap marker
    would instead ask every client to handle holes; ending the stream keeps
    the stream contract simple: in order, no gap, no duplicate, or an error.)

Replay then live, per timeline
    Synthetic series share one cursor; each published series has its own.
    :meth:`Hub.stream` reads history chunk by chunk from each timeline's
    cursor, round after round, until one whole round finds nothing new; it
    then registers the subscriber in the same event-loop step (no await in
    between), so the first live item of every timeline is exactly the one
    after the last replayed point.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import AsyncGenerator, Callable

from pulsestream.spec import StreamSpec
from pulsestream.v1 import timeseries_pb2
from pulsestream_generator.aggregation import MARGIN_MS, WIDTHS, Bucket, closed_by, summarise
from pulsestream_generator.clock import align_down, align_up, next_tick, now_ms
from pulsestream_generator.history import History
from pulsestream_generator.journal import Journal
from pulsestream_generator.live import (
    SYNTHETIC,
    Ended,
    EndReason,
    PublishedItem,
    StreamEnded,
    Subscription,
    TickBatch,
)
from pulsestream_generator.metrics import GeneratorMetrics
from pulsestream_generator.publishedstore import MemoryStore, PublishedStore, Sealed, Stored
from pulsestream_generator.query import Query
from pulsestream_generator.replay import bucket_chunk, previous_bucket, raw_chunk
from pulsestream_generator.source import Source
from pulsestream_generator.timeline import Appended, Closed, Timeline, bucket_of

__all__ = ["EndReason", "Hub", "StreamEnded"]

logger = logging.getLogger(__name__)

#: How often :meth:`Hub.maintain` looks for buckets to close by the clock, and trims published history.
MAINTAIN_INTERVAL_S = 0.1
TRIM_EVERY = 10


class Hub:
    """Produces ticks into the history ring, stores published points, and fans both out to subscribers."""

    def __init__(
        self,
        source: Source,
        spec: StreamSpec,
        metrics: GeneratorMetrics,
        *,
        close_delay_ms: int = 2000,
        journal: Journal | None = None,
        store: Callable[[Stored, Sealed], PublishedStore] | None = None,
    ) -> None:
        self.source = source
        self.spec = spec
        self.metrics = metrics
        self.history = History(spec.series)
        self._memory: MemoryStore | None = None
        self.published: PublishedStore
        if store is None:
            self._memory = self.published = MemoryStore(self._stored, journal)
        else:  # a shared history (GENERATOR_HISTORY_URL): it calls back when its follower mirrors points and seals
            self.published = store(self._stored, self._sealed)
        self.published.declare(spec.published)
        self.close_delay_ms = close_delay_ms
        self.draining = False
        self._subscriptions: set[Subscription] = set()
        self._synthetic_subs: set[Subscription] = set()
        self._by_series: dict[str, set[Subscription]] = {}
        self._widths: Counter[int] = Counter()
        self._published_widths: dict[str, Counter[int]] = {}
        self._last = 0
        self._period_changed = False
        self._wake = asyncio.Event()
        metrics.track_buffer_fill(self.buffer_fill)
        metrics.track_published_series(lambda: len(self.published))

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
        # A created published series whose name became synthetic gives way; so does a declared one left empty.
        taken = [name for name in added if name in self.published]
        for name in taken:
            self.published.remove(name)
            logger.warning("published series %s removed: the live settings made the name synthetic", name)
        undeclared = self.published.declare(spec.published)
        self._end_streams_of({*removed, *taken, *undeclared})
        if spec.retention.millis < old.retention.millis and self._last:
            self.history.trim(self._last - self.span_ms)
        logger.info(
            "live settings applied",
            extra={
                "frequency": str(spec.frequency),
                "retention": str(spec.retention),
                "buffer_size": spec.buffer_size,
                "series": ",".join(spec.series),
                "published": ",".join(entry.name for entry in spec.published),
                "added": ",".join(added),
                "removed": ",".join(removed),
            },
        )

    def _end_streams_of(self, gone: set[str]) -> None:
        if gone:
            for sub in list(self._subscriptions):
                if any(name in gone for name in sub.query.series):
                    sub.end(EndReason.SERIES_REMOVED)

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

    def recover(self, now: int) -> None:
        """Get back the published points a journal holds (at start, before serving)."""
        if self._memory is None:
            return
        replayed = self._memory.recover(now - self.span_ms, synthetic=self.spec.series)
        if replayed is not None:
            logger.info(
                "published history recovered from the journal",
                extra={
                    "segments": replayed.segments,
                    "points": replayed.points,
                    "series": len(self.published),
                    "discarded_bytes": replayed.discarded,
                },
            )

    def close(self) -> None:
        """Sync and close the journal, if any (after the server stopped)."""
        if self._memory is not None:
            self._memory.close()

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
        """Produce one tick: compute, record, close buckets, offer to every synthetic subscriber."""
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
        for sub in self._synthetic_subs:
            sub.offer(batch)
        self.metrics.points_produced.inc(len(values))

    # --- published series -------------------------------------------------------------------------

    def _closed_buckets(
        self, timeline: Timeline, closed: tuple[Closed, ...] | list[Closed]
    ) -> dict[int, tuple[int, list[Bucket]]]:
        """The buckets that closed, for the widths someone follows on this series (computed once for all)."""
        wanted = self._published_widths.get(timeline.name)
        buckets: dict[int, tuple[int, list[Bucket]]] = {}
        if not wanted:
            return buckets
        for entry in closed:
            width = WIDTHS[entry.index]
            if wanted[width]:
                previous, found = bucket_of(timeline, entry)
                if found:
                    buckets[width] = (previous, found)
        return buckets

    def _stored(self, timeline: Timeline, appended: Appended) -> None:
        """The store's callback: points were stored in ``timeline``; hand them to its subscribers now."""
        subs = self._by_series.get(timeline.name)
        if not subs:
            return
        item = PublishedItem(
            timeline.name,
            appended.times,
            appended.values,
            appended.previous,
            self._closed_buckets(timeline, appended.closed),
        )
        for sub in subs:
            sub.offer(item)

    def _sealed(self, timeline: Timeline, closed: list[Closed]) -> None:
        """Buckets of ``timeline`` closed by the clock: hand them to its subscribers now."""
        subs = self._by_series.get(timeline.name)
        if not subs:
            return
        buckets = self._closed_buckets(timeline, closed)
        if buckets:
            item = PublishedItem(timeline.name, (), (), timeline.newest, buckets)
            for sub in subs:
                sub.offer(item)

    def seal_and_trim(self, now: int, *, trim: bool) -> None:
        """Close quiet buckets by the clock (fanned out at once); with ``trim``, drop history past the span."""
        for timeline, closed in self.published.seal(now, self.close_delay_ms):
            self._sealed(timeline, closed)
        if trim:
            expired = self.published.trim(now - self.span_ms, keep=self._by_series.keys())
            if expired:
                logger.info(
                    "published series expired (no point within the retention)", extra={"series": ",".join(expired)}
                )

    async def maintain(self) -> None:
        """Close quiet buckets and trim published history until cancelled."""
        rounds = 0
        while True:
            await asyncio.sleep(MAINTAIN_INTERVAL_S)
            rounds += 1
            self.seal_and_trim(now_ms(), trim=rounds % TRIM_EVERY == 0)

    # --- subscribers ------------------------------------------------------------------------------

    def drain(self) -> None:
        """End every subscription (their streams end with UNAVAILABLE) and refuse new ones."""
        self.draining = True
        for sub in list(self._subscriptions):
            sub.end(EndReason.DRAINING)

    def _overflowed(self) -> None:
        self.metrics.overflows.inc()
        logger.debug("subscriber overflowed its buffer", extra={"buffer_size": self.spec.buffer_size})

    def _gone(self, query: Query) -> list[str]:
        """Series of the query this generator no longer serves."""
        synthetic = [name for name in query.synthetic if name not in self.history.series]
        return synthetic + [name for name in query.published if name not in self.published]

    def _check(self, query: Query, cursors: dict[str, int]) -> None:
        cursor = min(cursors.values())
        if self.draining:
            raise StreamEnded(
                EndReason.DRAINING,
                f"server draining, reconnect (resume with after_sequence={cursor})",
                after_sequence=cursor,
            )
        gone = self._gone(query)
        if gone:
            raise StreamEnded(
                EndReason.SERIES_REMOVED,
                f"series {', '.join(gone)} no longer served (live settings changed)",
                series=",".join(gone),
            )
        for key, at in cursors.items():
            held = self.history if key == SYNTHETIC else self._timeline(key).history
            if not held.holds_from(query.first_needed(at)):
                raise StreamEnded(
                    EndReason.REPLAY_BEHIND,
                    f"replay fell behind the retention window at sequence {at}; resubscribe with a later start",
                    last_sequence=at,
                )

    def _timeline(self, name: str) -> Timeline:
        timeline = self.published.timeline(name)
        if timeline is None:  # _check saw it: only a settings change in between removes one
            raise StreamEnded(EndReason.SERIES_REMOVED, f"series {name} no longer served", series=name)
        return timeline

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
            gone = self._gone(sub.query)
            return StreamEnded(
                reason, f"series {', '.join(gone)} no longer served (live settings changed)", series=",".join(gone)
            )
        return StreamEnded(
            reason, f"server draining, reconnect (resume with after_sequence={cursor})", after_sequence=cursor
        )

    def _chunk(self, query: Query, key: str, cursor: int) -> tuple[timeseries_pb2.SubscribeResponse | None, int]:
        """The next chunk of history of one timeline after ``cursor``."""
        if key == SYNTHETIC:
            if query.raw:
                return raw_chunk(self.history, query.synthetic, cursor)
            return bucket_chunk(self.history, query.synthetic, query.width_ms, cursor)
        timeline = self._timeline(key)
        index = query.width_index
        return timeline.raw_chunk(cursor) if index is None else timeline.bucket_chunk(index, cursor)

    def _register(self, query: Query) -> Subscription:
        sub = Subscription(query, lambda: self.spec.buffer_size, self._overflowed)
        self._subscriptions.add(sub)
        if query.synthetic:
            self._synthetic_subs.add(sub)
            self._widths[query.width_ms] += 1
        for name in query.published:
            self._by_series.setdefault(name, set()).add(sub)
            self._published_widths.setdefault(name, Counter())[query.width_ms] += 1
        return sub

    def _unregister(self, sub: Subscription) -> None:
        query = sub.query
        self._subscriptions.discard(sub)
        if query.synthetic:
            self._synthetic_subs.discard(sub)
            self._widths[query.width_ms] -= 1
        for name in query.published:
            subs = self._by_series.get(name)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_series[name]
                    self._published_widths.pop(name, None)
                else:
                    self._published_widths[name][query.width_ms] -= 1

    async def stream(self, query: Query) -> AsyncGenerator[timeseries_pb2.SubscribeResponse]:
        """History from each timeline's cursor, then live items; raises :class:`StreamEnded` when cut."""
        cursors = {SYNTHETIC: query.after} if query.synthetic else {}
        cursors.update(query.starts)
        progressed = True
        while progressed:  # rounds over every timeline, until one round finds nothing new
            progressed = False
            for key, cursor in list(cursors.items()):
                self._check(query, cursors)
                response, reached = self._chunk(query, key, cursor)
                if response is not None:
                    yield response
                    cursors[key] = reached
                    progressed = True
        # Caught up everywhere: register in this same loop step, so each timeline continues exactly.
        sub = self._register(query)
        lag = self.metrics.send_lag.labels(query.resolution)
        width = query.width_ms
        try:
            while True:
                try:
                    item = await sub.next()
                except Ended:
                    raise self._explain(sub, min(cursors.values())) from None
                key = item.key
                sequence = item.sequence(width)
                if sequence is None or sequence <= cursors[key]:
                    continue
                response = item.response(query, cursors[key])
                if response is None:
                    continue
                lag.observe(max(0.0, (now_ms() - sequence) / 1000))
                yield response
                cursors[key] = sequence
        finally:
            self._unregister(sub)
