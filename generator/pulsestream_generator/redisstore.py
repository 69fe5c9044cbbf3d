"""Published history in Redis Streams, shared by every generator replica (``GENERATOR_HISTORY_URL``).

Redis holds the history (:mod:`.redislayout`: one stream per series, the
stream id is the point's sequence); each replica keeps a local mirror of it
(the same :class:`~.timeline.Timeline` objects the memory store keeps) and
serves ``Subscribe`` and ``ListSeries`` from that mirror. One path for every
replica, the one that accepted a batch included:

1. ``append`` sends a checked batch to Redis as one script call (one round
   trip): per series, points newer than the stream's top are appended with
   id ``<t>-0``, the others are told apart (duplicate: that id exists; else
   out of order), late marks come from the series' clock seals, the stream
   is trimmed to the span. The batch is acknowledged once Redis answered;
   an error or a timeout is :class:`~.publishedstore.Unavailable` (the
   producer resends: the same ids count as duplicates);
2. the follower of every replica reads the series streams (``XREAD BLOCK``,
   at most :data:`GROUP_KEYS` keys per call, one id per key) and the events
   stream (new series), applies the entries to its mirror in id order, and
   hands every stored run (and every seal) to the fan-out, so live output
   and sequences are the same on every replica;
3. buckets of quiet series are closed by the clock through Redis too: a
   replica that finds one due asks Redis to seal it (a script that writes
   a seal entry only if no point closed the bucket and no replica sealed it
   first), and applies the seal when it mirrors it. Which points are late
   is decided by Redis at append time from those seals and recorded in the
   entry, so every replica and every later replay computes the same buckets.

At start, and after every reconnect, the follower lists the series Redis
holds, loads what it has not mirrored (``XRANGE`` from the last id it
applied) and then follows from there: nothing acknowledged is missed, and
entries are applied once (by id), however they are read.

While Redis is unreachable: ``append`` raises ``Unavailable`` (Publish and
Export answer UNAVAILABLE, HISTORY_UNAVAILABLE), the mirror keeps serving
what it has, :attr:`RedisStore.up` is false (gRPC health of the ingest
service NOT_SERVING, ``pulsestream_generator_history_up`` 0), and the
follower reconnects with backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from pulsestream.spec import PublishedSeries
from pulsestream_generator.clock import now_ms
from pulsestream_generator.metrics import HistoryMetrics
from pulsestream_generator.publishedstore import (
    Described,
    MemoryStore,
    Outcome,
    Sealed,
    SeriesMeta,
    Stored,
    Unavailable,
    sorted_points,
)
from pulsestream_generator.publishing import Batch
from pulsestream_generator.redislayout import (
    APPEND,
    EVENTS_MAXLEN,
    EXPIRE,
    EXPIRE_MARGIN_MS,
    REVIVE_MARGIN_MS,
    SEAL,
    Layout,
    parse_id,
)
from pulsestream_generator.timeline import Closed, Timeline

__all__ = ["BLOCK_MS", "GROUP_KEYS", "RedisStore"]

logger = logging.getLogger(__name__)

#: Series keys per follower read (one XREAD, one connection): Redis checks every key of a call.
GROUP_KEYS = 256
#: Entries one read returns per key; a backlog is read in pages of this. With GROUP_KEYS keys a read holds at
#: most 65,536 entries (about 20 MB of reply objects) in the rare case every key has a backlog.
READ_COUNT = 256
#: Entries per XRANGE page when loading, and keys per pipelined load: at most 32,000 entries at once.
LOAD_COUNT = 2_000
LOAD_KEYS = 16
#: How long a follower read blocks in Redis (ms): bounds how late a key added to a busy group is read.
BLOCK_MS = 250
#: Reconnect backoff (seconds): doubling from the base to the cap, with jitter.
RECONNECT_BASE_S = 0.1
RECONNECT_CAP_S = 2.0
#: A series announced (events stream) this recently is not forgotten (seconds; see :mod:`.redislayout`).
TOUCH_HOLD_S = 10.0
#: Expired series are dropped from Redis's list at most this often (seconds).
EXPIRE_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class _Clock:
    """What the store asks the hub for, as it is now (live settings may change it)."""

    synthetic: Callable[[], Collection[str]]
    span_ms: Callable[[], int]


class RedisStore:
    """A :class:`~.publishedstore.PublishedStore` kept in Redis Streams and mirrored locally."""

    def __init__(
        self,
        client: redis.Redis,
        layout: Layout,
        on_stored: Stored,
        on_sealed: Sealed,
        metrics: HistoryMetrics,
        *,
        synthetic: Callable[[], Collection[str]],
        span_ms: Callable[[], int],
        block_ms: int = BLOCK_MS,
    ) -> None:
        self.client = client
        #: A read must come back well within the client's command timeout, or every read would time out.
        self._block_ms = max(10, block_ms)
        # Entries as Redis sends them (nested lists), not a dict per entry: the mirror reads them once.
        for command in ("XREAD", "XRANGE"):
            client.set_response_callback(command, _raw)
        self.layout = layout
        self.local = MemoryStore(on_stored)
        self._on_stored = on_stored
        self._on_sealed = on_sealed
        self.metrics = metrics
        self._clock = _Clock(synthetic, span_ms)
        self._append = client.register_script(APPEND)
        self._seal = client.register_script(SEAL)
        self._expire = client.register_script(EXPIRE)
        #: Last applied entry per followed series, and which read group follows it.
        self._position: dict[str, tuple[int, int]] = {}
        self._group_of: dict[str, int] = {}
        self._groups: list[list[str]] = [[]]
        self._events_id = b"0-0"
        self._touched: dict[str, float] = {}
        self._loaded: set[str] = set()
        #: Seals asked for and not yet mirrored, (series, width index) -> bucket; and those still to send.
        self._asked: dict[tuple[str, int], Closed] = {}
        self._to_send: list[tuple[str, Closed]] = []
        self._work = asyncio.Event()
        self._expire_at = 0.0
        self._expire_due = False
        self.up = False
        self._changed = asyncio.Event()
        self.synced = asyncio.Event()
        self._heard = time.monotonic()
        self._group_tasks: list[asyncio.Task[None]] = []
        self._failure: asyncio.Future[None] | None = None
        metrics.up.set_function(lambda: 1.0 if self.up else 0.0)
        metrics.follow_lag.set_function(lambda: 0.0 if self.up else time.monotonic() - self._heard)

    # --- what the hub and the servicers read (the local mirror) -------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self.local

    def __len__(self) -> int:
        return len(self.local)

    def names(self) -> list[str]:
        return self.local.names()

    def timeline(self, name: str) -> Timeline | None:
        return self.local.timeline(name)

    def meta(self, name: str) -> SeriesMeta:
        return self.local.meta(name)

    def describe(self, name: str, unit: str, description: str) -> None:
        self.local.describe(name, unit, description)

    def declare(self, declared: Sequence[PublishedSeries]) -> list[str]:
        gone = self.local.declare(declared)
        for name in gone:
            self._unfollow(name)
        for entry in declared:
            self._follow(entry.name)
        return gone

    def remove(self, name: str) -> None:
        self.local.remove(name)
        self._unfollow(name)

    # --- writing ----------------------------------------------------------------------------------

    async def append(self, batch: Batch, now: int, meta: Described | None = None) -> Outcome:
        if not batch:
            return Outcome()
        span = self._clock.span_ms()
        layout = self.layout
        keys: list[str] = [layout.events, layout.series, layout.meta]
        revive_before = now - span + REVIVE_MARGIN_MS
        args: list[str | int | float] = [now, now - span, span + EXPIRE_MARGIN_MS, revive_before, EVENTS_MAXLEN]
        total = Outcome()
        names = list(batch)
        for name in names:
            part = batch[name]
            times, values = sorted_points(part)
            total.duplicates += len(part.times) - len(times)
            described = meta.get(name) if meta else None
            keys += [layout.points(name), layout.closed(name)]
            args += [name, json.dumps({"unit": described[0], "description": described[1]}) if described else ""]
            args += [" ".join(map(str, times)), " ".join(map(repr, values)), " ".join(map(repr, part.untimed))]
        started = time.perf_counter()
        try:
            result = await self._append(keys=keys, args=args)
        except (RedisError, OSError) as error:
            self.metrics.errors.labels("append").inc()
            raise Unavailable(f"the shared history did not take the batch ({_why(error)}); resend it") from error
        finally:
            self.metrics.append.observe(time.perf_counter() - started)
        for index, name in enumerate(names):
            created, accepted, duplicates, out_of_order, late = (int(n) for n in result[5 * index : 5 * index + 5])
            total.accepted += accepted
            total.duplicates += duplicates
            total.out_of_order += out_of_order
            total.late += late
            if created and name not in self.local:
                total.created.append(name)
        return total

    def seal(self, now: int, delay_ms: int) -> Iterator[tuple[Timeline, list[Closed]]]:
        """Ask Redis to seal the buckets due now; they close here when the follower mirrors the seal."""
        if not self.up:
            return iter(())
        for name in self.local.names():
            timeline = self.local.timeline(name)
            if timeline is None:
                continue
            for closed in timeline.due(now, delay_ms):
                key = (name, closed.index)
                if self._asked.get(key) != closed:
                    self._asked[key] = closed
                    self._to_send.append((name, closed))
                    self._work.set()
        return iter(())

    def trim(self, keep_from: int, keep: Collection[str]) -> list[str]:
        """Trim the mirror (Redis trims on append); forget quiet series here, and in Redis's list now and then."""
        hold = time.monotonic() - TOUCH_HOLD_S
        self._touched = {name: at for name, at in self._touched.items() if at > hold}
        expired = self.local.trim(keep_from, {*keep, *self._touched})
        for name in expired:
            self._unfollow(name)
        if time.monotonic() >= self._expire_at:
            self._expire_at = time.monotonic() + EXPIRE_EVERY_S
            self._expire_due = True
            self._work.set()
        return expired

    async def _write_seals_and_expiry(self) -> None:
        """The writer: sends the seals asked for, and drops expired series from Redis's list."""
        while True:
            await self._work.wait()
            self._work.clear()
            seals, self._to_send = self._to_send, []
            expire, self._expire_due = self._expire_due, False
            try:
                if seals:
                    keys = [key for name, _ in seals for key in (self.layout.points(name), self.layout.closed(name))]
                    args: list[str | int | float] = [self._clock.span_ms() + EXPIRE_MARGIN_MS]
                    for _, closed in seals:
                        args += [closed.index, closed.lo, closed.hi]
                    await self._seal(keys=keys, args=args)
                if expire:
                    gone_before = now_ms() - self._clock.span_ms() - EXPIRE_MARGIN_MS
                    await self._expire(keys=[self.layout.series, self.layout.meta], args=[gone_before])
            except (RedisError, OSError) as error:
                self.metrics.errors.labels("seal").inc()
                logger.debug("shared history: seals not written (%s); asked again next round", _why(error))
                for name, closed in seals:  # asked again at the next maintain round, from the mirror's state
                    self._asked.pop((name, closed.index), None)

    # --- following ----------------------------------------------------------------------------------

    def _follow(self, name: str) -> None:
        if name in self._group_of:
            return
        groups = self._groups
        index = next((i for i, group in enumerate(groups) if len(group) < GROUP_KEYS), len(groups))
        if index == len(groups):
            groups.append([])
        groups[index].append(name)
        self._group_of[name] = index
        if self._failure is not None and index >= len(self._group_tasks):
            self._spawn(index)  # a new group while following: its own read loop

    def _unfollow(self, name: str) -> None:
        index = self._group_of.pop(name, None)
        if index is not None:
            self._groups[index].remove(name)
        self._position.pop(name, None)
        self._loaded.discard(name)
        for key in [key for key in self._asked if key[0] == name]:
            del self._asked[key]

    def _set_up(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            self._changed.set()

    async def states(self) -> AsyncIterator[bool]:
        """Whether the shared history is reachable and followed, now and at every change."""
        while True:
            self._changed.clear()
            yield self.up
            await self._changed.wait()

    async def run(self) -> None:
        """Follow the shared history and write seals until cancelled (reconnecting as long as it takes)."""
        writer = asyncio.create_task(self._write_seals_and_expiry(), name="generator-history-writer")
        try:
            await self._follow_forever()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _follow_forever(self) -> None:
        delay = RECONNECT_BASE_S
        while True:
            try:
                await self._sync()
                self._set_up(True)
                self.synced.set()
                delay = RECONNECT_BASE_S
                await self._follow_groups()
            except (RedisError, OSError) as error:
                self.metrics.errors.labels("follow").inc()
                if self.up or not self.synced.is_set():
                    logger.warning(
                        "shared history unreachable: publishing answers UNAVAILABLE, streams serve the local "
                        "mirror; reconnecting",
                        extra={"error": _why(error)},
                    )
                self._set_up(False)
                self.synced.set()  # start-up does not wait for a Redis that is down
                await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))
                delay = min(RECONNECT_CAP_S, delay * 2)

    async def _sync(self) -> None:
        """List what Redis holds and load what the mirror lacks; then reads continue from each last id."""
        client, layout = self.client, self.layout
        top: Any = await client.xrevrange(layout.events, count=1)
        events_id = top[0][0] if top else b"0-0"
        keep_from = now_ms() - self._clock.span_ms()
        synthetic = self._clock.synthetic()
        listed: Any = await client.zrangebyscore(layout.series, keep_from, "+inf")
        described: Any = await client.hgetall(layout.meta)
        for raw in listed:
            name = raw.decode()
            if name not in synthetic:
                self.local.ensure(name)
                self._follow(name)
        for raw_name, raw_meta in described.items():
            self._describe(raw_name.decode(), raw_meta)
        await self._load(list(self._group_of))
        if parse_id(events_id) > parse_id(self._events_id):
            self._events_id = events_id
        self._heard = time.monotonic()
        was = "reconnected to" if self.synced.is_set() else "following"
        logger.info(
            "%s the shared history",
            was,
            extra={"series": len(self._group_of), "points": sum(len(t) for t in self._timelines())},
        )

    def _timelines(self) -> Iterator[Timeline]:
        for name in self._group_of:
            timeline = self.local.timeline(name)
            if timeline is not None:
                yield timeline

    async def _load(self, names: list[str]) -> None:
        """Read every entry after the last applied one, for each name (pipelined, in pages)."""
        pending = names
        while pending:
            chunk, pending = pending[:LOAD_KEYS], pending[LOAD_KEYS:]
            fresh = [name for name in chunk if name not in self._loaded]
            async with self.client.pipeline(transaction=False) as pipe:
                for name in chunk:
                    pipe.xrange(self.layout.points(name), self._after(name), "+", count=LOAD_COUNT)
                for name in fresh:
                    pipe.xinfo_stream(self.layout.points(name))
                replies = await pipe.execute(raise_on_error=False)
            for name, info in zip(fresh, replies[len(chunk) :], strict=True):
                deleted = info.get("max-deleted-entry-id") if isinstance(info, dict) else None
                timeline = self.local.timeline(name)
                if deleted and timeline is not None:
                    timeline.starts_after(parse_id(deleted)[0])
                self._loaded.add(name)
            for name, reply in zip(chunk, replies[: len(chunk)], strict=True):
                if isinstance(reply, Exception):
                    raise reply
                self._apply(name, reply)
                if len(reply) == LOAD_COUNT:
                    pending.append(name)

    def _after(self, name: str) -> str:
        ms, seq = self._position.get(name, (0, 0))
        return f"({ms}-{seq}"

    def _spawn(self, index: int) -> None:
        task = asyncio.create_task(self._read_group(index), name=f"generator-history-follow-{index}")
        self._group_tasks.append(task)

    async def _follow_groups(self) -> None:
        """Run one read loop per group until one fails; raise its error (the others are stopped)."""
        self._failure = asyncio.get_running_loop().create_future()
        try:
            for index in range(len(self._groups)):
                self._spawn(index)
            await self._failure
        finally:
            tasks, self._group_tasks, self._failure = self._group_tasks, [], None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read_group(self, index: int) -> None:
        try:
            while True:
                streams: dict[Any, Any] = {}
                if index == 0:
                    streams[self.layout.events] = self._events_id
                for name in self._groups[index]:
                    ms, seq = self._position.get(name, (0, 0))
                    streams[self.layout.points(name)] = f"{ms}-{seq}"
                if not streams:
                    await asyncio.sleep(self._block_ms / 1000)
                    continue
                reply = await self.client.xread(streams, count=READ_COUNT, block=self._block_ms)
                self._heard = time.monotonic()
                self._take(reply)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if self._failure is not None and not self._failure.done():
                self._failure.set_exception(error)

    def _take(self, reply: Any) -> None:
        items = reply.items() if isinstance(reply, dict) else (reply or [])
        events = self.layout.events.encode()
        prefix = self.layout.points_prefix
        for raw_key, entries in items:
            if raw_key == events:
                self._events(entries)
            elif raw_key.startswith(prefix):
                self._apply(raw_key[len(prefix) :].decode(), entries)

    def _events(self, entries: list[list[Any]]) -> None:
        synthetic = self._clock.synthetic()
        for raw_id, flat in entries:
            self._events_id = raw_id
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            name = fields.get(b"n", b"").decode()
            if not name or name in synthetic:
                continue
            if b"m" in fields:
                self._describe(name, fields[b"m"])
            self._touched[name] = time.monotonic()
            self.local.ensure(name)
            self._follow(name)

    def _describe(self, name: str, raw: bytes) -> None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            meta = json.loads(raw)
            self.local.describe(name, str(meta["unit"]), str(meta["description"]))

    def _apply(self, name: str, entries: list[list[Any]]) -> None:
        """Mirror one series' entries (in id order; those applied before are skipped) and fan them out.

        Entries are ``[id, [field, value, ...]]``: a point ``[b"<t>-0", [b"v", value]]`` (plus ``b"l",
        mask`` when late), a seal ``[b"<t>-<k>", [b"s", index, b"u", end]]``.
        """
        if not entries or name not in self._group_of or name in self._clock.synthetic():
            return
        timeline = self.local.ensure(name)
        position = self._position.get(name, (0, 0))
        skip = 0
        while skip < len(entries) and parse_id(entries[skip][0]) <= position:
            skip += 1  # read twice (a load and a follower read overlapped): applied once
        if skip == len(entries):
            return
        newest = timeline.newest
        times: list[int] = []
        values: list[float] = []
        late: dict[int, int] = {}
        for raw_id, fields in entries[skip:] if skip else entries:
            ms_text, _, seq_text = raw_id.partition(b"-")
            if seq_text != b"0":
                self._store_run(timeline, times, values, late)
                times, values, late = [], [], {}
                self._apply_seal(timeline, dict(zip(fields[::2], fields[1::2], strict=True)))
                continue
            ms = int(ms_text)
            if ms > newest:
                times.append(ms)
                values.append(float(fields[1]))
                newest = ms
                if len(fields) > 2:
                    late[ms] = int(fields[3])
        self._store_run(timeline, times, values, late)
        self._position[name] = parse_id(entries[-1][0])

    def _store_run(self, timeline: Timeline, times: list[int], values: list[float], late: dict[int, int]) -> None:
        if times:
            appended = timeline.append(times, values, late)
            self.metrics.mirror_delay.observe(max(0.0, (now_ms() - times[-1]) / 1000))
            self._on_stored(timeline, appended)

    def _apply_seal(self, timeline: Timeline, fields: dict[bytes, bytes]) -> None:
        with contextlib.suppress(KeyError, ValueError, IndexError):
            index, through = int(fields[b"s"]), int(fields[b"u"])
            closed = timeline.apply_seal(index, through)
            asked = self._asked.get((timeline.name, index))
            if asked is not None and asked.hi <= through:
                del self._asked[(timeline.name, index)]
            if closed is not None:
                self._on_sealed(timeline, [closed])

    async def aclose(self) -> None:
        await self.client.aclose()


def _raw(response: Any, **options: Any) -> Any:
    return response


def _why(error: BaseException) -> str:
    """An error as one short line (redis-py's messages name host and port, never the password)."""
    return f"{type(error).__name__}: {error}"[:300]
