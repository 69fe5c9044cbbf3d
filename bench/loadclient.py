"""An efficient SSE load client: many connections per process, several processes.

Each worker process runs one uvloop event loop holding its share of the
connections as plain ``asyncio.Protocol`` objects (no thread, no task and no
HTTP library per connection). For every ``points`` event it records, per
point, the end-to-end latency ``receive time - t`` (``t`` is the point's epoch
milliseconds; for an aggregated point, ``t`` plus the bucket width, when it
closes), and checks each series' continuity per connection: by the
point's link to its predecessor when the event carries one (``prev`` or
``previous_sequence``), else by the expected sequence step (the generator
period for raw points, the bucket width for aggregates).

Identical event payloads are decoded once per process: pulsestream sends the
same bytes to every client and the reference's ``json.dumps`` output is
identical too, so a small cache keyed by the payload saves the load client
most of its JSON work without skipping any per-connection check. The decoded
points are grouped per series with their inner continuity checked once, so a
connection checks one boundary per series and event; latencies are folded
into the histogram after the window, not while the target is measured.

The orchestrator (``bench.__main__``) drives the workers through shared
memory (:class:`Control`): it learns how many connections are open, then
publishes the measurement window (wall-clock start and end) and finally a
stop flag. Only points received inside the window count towards rates and
latency; continuity is checked for the whole life of each connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import multiprocessing
import resource
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, cast

import orjson
from sse import EventStreamParser, RawEvent

from bench.histogram import BUCKETS_PER_MS, LatencyHistogram
from bench.wire import ChunkedDecoder, WireError, parse_head

#: Keys under which a point may link to its predecessor's sequence.
PREVIOUS_KEYS = ("prev", "previous_sequence", "previousSequence", "prevSeq")
_CACHE_LIMIT = 4096
_CONNECT_ATTEMPTS = 3
_POLL = 0.05
_EXAMPLES = 5  # gap and duplicate examples kept, to tell where they happen

Decoded = tuple[tuple[tuple[str, float, int, int], ...], bool]


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit; children inherit it. Returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1_048_576)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def decode_points(data: bytes) -> Decoded:
    """``(series, t, seq, prev)`` per point of a d3-format payload, and whether it is marked ``reset``.

    ``prev`` is -1 when the point carries no link to its predecessor.
    """
    document = orjson.loads(data)
    points = []
    for point in document.get("points", ()):
        prev = -1
        for key in PREVIOUS_KEYS:
            if key in point:
                prev = int(point[key])
                break
        points.append((str(point["series"]), float(point["t"]), int(point["seq"]), prev))
    meta = document.get("meta") or {}
    reset = bool(document.get("reset") or (isinstance(meta, dict) and meta.get("reset")))
    return tuple(points), reset


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What one worker process does: open ``connections`` streams to ``host:port`` ``path``."""

    host: str
    port: int
    path: str
    connections: int
    step_ms: int
    #: Subtracted from every latency: an aggregated point's ``t`` is its bucket's start, and
    #: it can only be sent when the bucket closes, ``bucket width`` later.
    latency_offset_ms: int = 0
    connect_concurrency: int = 64
    connect_timeout: float = 20.0
    max_duration: float = 600.0

    def request(self) -> bytes:
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: pulsestream-bench\r\n\r\n"
        ).encode()


@dataclass(slots=True)
class Tally:
    """Counters of one worker, or of all workers once merged."""

    opened: int = 0
    refused: int = 0
    closed_early: int = 0
    events: int = 0
    points: int = 0
    snapshot_events: int = 0
    snapshot_points: int = 0
    heartbeats: int = 0
    body_bytes: int = 0
    gaps: int = 0
    missing: int = 0
    duplicates: int = 0
    resets: int = 0
    linked: bool = False
    statuses: Counter[int] = field(default_factory=Counter)
    other_events: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    examples: list[str] = field(default_factory=list)
    #: The worst latency (ms) seen in each second of the window: a rising line means falling behind.
    worst_by_second: dict[int, float] = field(default_factory=dict)

    def merge(self, other: Tally) -> None:
        for name in (
            "opened",
            "refused",
            "closed_early",
            "events",
            "points",
            "snapshot_events",
            "snapshot_points",
            "heartbeats",
            "body_bytes",
            "gaps",
            "missing",
            "duplicates",
            "resets",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.linked = self.linked or other.linked
        self.statuses.update(other.statuses)
        self.other_events.update(other.other_events)
        self.errors.update(other.errors)
        self.histogram.merge(other.histogram)
        self.examples.extend(other.examples[: max(0, _EXAMPLES - len(self.examples))])
        for second, worst in other.worst_by_second.items():
            self.worst_by_second[second] = max(worst, self.worst_by_second.get(second, 0.0))


#: One series' points within one event: series, first seq, first prev, last seq, whether the points
#: follow each other exactly, the points as (seq, prev, t), and their ``t`` alone (for latency).
_Run = tuple[str, int, int, int, bool, tuple[tuple[int, int, float], ...], tuple[float, ...]]


def runs_of(points: Sequence[tuple[str, float, int, int]], step: int) -> tuple[_Run, ...]:
    """Group an event's points by series (in order) and check each group's inner continuity once.

    Done once per distinct payload (it is cached), so a connection's work per event is one
    check per series at the boundary with what it saw before, not one per point.
    """
    grouped: dict[str, list[tuple[int, int, float]]] = {}
    for series, t, seq, prev in points:
        grouped.setdefault(series, []).append((seq, prev, t))
    runs = []
    for series, items in grouped.items():
        clean = True
        for (seq_a, _, _), (seq_b, prev_b, _) in itertools.pairwise(items):
            if not (prev_b == seq_a if prev_b >= 0 else seq_b - seq_a == step):
                clean = False
                break
        first_seq, first_prev, _ = items[0]
        runs.append((series, first_seq, first_prev, items[-1][0], clean, tuple(items), tuple(t for *_, t in items)))
    return tuple(runs)


class _Worker:
    """Per-process state shared by all connections: the window, the tally and the decode cache.

    Inside the window, the latency of a clean run of points is not computed on arrival: the
    receive time and the points' ``t`` are appended to :attr:`samples` and folded into the
    histogram after the window (:meth:`fold`), so the load client's per-point work does not
    compete with the target while it is measured.
    """

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.step = max(1, plan.step_ms)
        self.tally = Tally()
        self.window_start = math.inf
        self.window_end = math.inf
        self.stopping = False
        self._cache: dict[bytes, tuple[tuple[_Run, ...], int, bool]] = {}
        self.streams: list[_Stream] = []
        self.samples: list[tuple[float, tuple[float, ...]]] = []

    def decoded(self, data: bytes) -> tuple[tuple[_Run, ...], int, bool]:
        """The event's runs, its point count and its reset flag (cached by payload)."""
        cached = self._cache.get(data)
        if cached is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            points, reset = decode_points(data)
            if any(prev >= 0 for *_, prev in points):
                self.tally.linked = True
            cached = self._cache[data] = (runs_of(points, self.step), len(points), reset)
        return cached

    def _example(self, what: str, stream: _Stream, kind: bytes, *, series: str, before: int, seq: int) -> None:
        if len(self.tally.examples) < _EXAMPLES:
            self.tally.examples.append(
                f"{what} in {kind.decode()} event #{stream.events} of a stream: {series} seq {seq} after {before}"
            )

    def on_events(self, stream: _Stream, now: float, events: Iterable[RawEvent]) -> None:
        tally = self.tally
        measuring = self.window_start <= now < self.window_end
        step = self.step
        last = stream.last
        for event in events:
            stream.events += 1
            kind = event.type
            is_points = kind == b"points"
            if not is_points and kind != b"snapshot":
                name = kind.decode("utf-8", "replace")
                if kind == b"notice":  # e.g. slow_consumer, upstream_unavailable: count by code
                    try:
                        name = f"notice:{orjson.loads(event.data).get('code')}"
                    except (ValueError, AttributeError):
                        name = "notice:undecodable"
                tally.other_events[name] += 1
                continue
            try:
                runs, count, reset = self.decoded(event.data)
            except (ValueError, KeyError, TypeError) as error:
                tally.errors[f"undecodable {kind.decode()} event: {type(error).__name__}"] += 1
                continue
            if reset:
                tally.resets += 1
                last.clear()
            timed = measuring and is_points
            if not is_points:
                tally.snapshot_events += 1
                tally.snapshot_points += count
            elif measuring:
                tally.events += 1
                tally.points += count
            for series, first_seq, first_prev, last_seq, clean, items, times in runs:
                if clean:
                    before = last.get(series)
                    if before is None or (first_prev == before if first_prev >= 0 else first_seq - before == step):
                        last[series] = last_seq
                        if timed:
                            self.samples.append((now, times))
                        continue
                self._point_by_point(stream, kind, series, items, now if timed else None)

    def _point_by_point(
        self, stream: _Stream, kind: bytes, series: str, items: Sequence[tuple[int, int, float]], now: float | None
    ) -> None:
        """The exact rules, one point at a time: for runs with a gap or duplicate (rare)."""
        tally, step, last = self.tally, self.step, stream.last
        kept: list[float] = []
        for seq, prev, t in items:
            before = last.get(series)
            if before is not None and not (prev == before if prev >= 0 else seq - before == step):
                if seq <= before:
                    tally.duplicates += 1
                    self._example("duplicate", stream, kind, series=series, before=before, seq=seq)
                    continue
                tally.gaps += 1
                tally.missing += max(1, (seq - before) // step - 1)
                self._example("gap", stream, kind, series=series, before=before, seq=seq)
            last[series] = seq
            kept.append(t)
        if now is not None and kept:
            self.samples.append((now, tuple(kept)))

    def fold(self) -> None:
        """Turn the window's samples into the latency histogram and the worst latency per second."""
        histogram = self.tally.histogram
        counts = histogram.counts
        worst_by_second = self.tally.worst_by_second
        offset = self.plan.latency_offset_ms
        start = self.window_start
        for now, times in self.samples:
            now_ms = now * 1000.0 - offset
            worst = 0.0
            for t in times:
                latency = now_ms - t
                if latency < 0:
                    histogram.negative += 1
                    latency = 0.0
                bucket = int(latency * BUCKETS_PER_MS)
                counts[bucket] = counts.get(bucket, 0) + 1
                if latency > worst:  # noqa: PLR1730 (hot loop: a compare is cheaper than max())
                    worst = latency
            second = int(now - start)
            if worst > worst_by_second.get(second, 0.0):
                worst_by_second[second] = worst
        self.samples = []


class _Stream(asyncio.Protocol):
    """One SSE connection: request on connect, then head, body decoding and events."""

    def __init__(self, worker: _Worker, request: bytes, opened: asyncio.Future[bool]) -> None:
        self.worker = worker
        self.request = request
        self.opened = opened
        self.transport: asyncio.Transport | None = None
        self.head_buffer = b""
        self.streaming = False
        self.decoder: ChunkedDecoder | None = None
        self.parser = EventStreamParser()
        self.last: dict[str, int] = {}
        self.events = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.streaming:
            data = self._head(data)
            if not data:
                return
        try:
            if self.decoder is not None:
                data = self.decoder.feed(data)
            self.worker.tally.body_bytes += len(data)
            events = self.parser.feed(data)
        except WireError as error:
            self._fail(f"bad response body: {error}")
            return
        if events:
            self.worker.on_events(self, now, events)

    def _head(self, data: bytes) -> bytes:
        self.head_buffer += data
        try:
            parsed = parse_head(self.head_buffer)
        except WireError as error:
            self._fail(f"bad response head: {error}")
            return b""
        if parsed is None:
            return b""
        head, rest = parsed
        self.head_buffer = b""
        self.worker.tally.statuses[head.status] += 1
        if head.status != 200:
            if not self.opened.done():
                self.opened.set_result(False)
            assert self.transport is not None
            self.transport.close()
            return b""
        self.streaming = True
        self.decoder = ChunkedDecoder() if head.chunked else None
        if not self.opened.done():
            self.opened.set_result(True)
        return rest

    def _fail(self, reason: str) -> None:
        self.worker.tally.errors[reason[:120]] += 1
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the response head: {exc}"))
        elif self.streaming and not self.worker.stopping:
            self.worker.tally.closed_early += 1
            self.worker.tally.errors[f"server closed the stream: {exc or 'EOF'}"[:120]] += 1
        self.worker.tally.heartbeats += self.parser.comments
        self.parser.comments = 0


class Control:
    """Shared memory between the orchestrator and the workers (no locks: one writer per slot)."""

    def __init__(self, context: SpawnContext, workers: int) -> None:
        self.times = context.RawArray("d", 3)  # window start, window end (epoch s), stop flag
        self.opened = context.RawArray("i", workers)
        self.failed = context.RawArray("i", workers)
        self.done = context.RawArray("i", workers)

    def set_window(self, start: float, end: float) -> None:
        self.times[1] = end
        self.times[0] = start

    def stop(self) -> None:
        self.times[2] = 1.0


async def _run_worker(plan: LoadPlan, control: Control, index: int) -> Tally:
    loop = asyncio.get_running_loop()
    worker = _Worker(plan)
    request = plan.request()
    gate = asyncio.Semaphore(max(1, plan.connect_concurrency))
    deadline = loop.time() + plan.max_duration

    async def connect_once() -> tuple[_Stream, bool]:
        """Open one connection and wait for its response head; True when it answered 200."""
        opened: asyncio.Future[bool] = loop.create_future()
        stream = _Stream(worker, request, opened)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: stream, plan.host, plan.port), plan.connect_timeout)
            return stream, await asyncio.wait_for(opened, plan.connect_timeout)
        except BaseException:
            if stream.transport is not None:
                stream.transport.abort()
            raise

    async def open_one() -> None:
        for attempt in range(_CONNECT_ATTEMPTS):
            if control.times[2] or loop.time() > deadline:
                break
            try:
                async with gate:
                    stream, ok = await connect_once()
            except (OSError, TimeoutError) as error:
                worker.tally.errors[f"connect: {type(error).__name__}: {error}"[:120]] += 1
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if ok:
                worker.streams.append(stream)
                worker.tally.opened += 1
                control.opened[index] += 1
            else:
                worker.tally.refused += 1
                control.failed[index] += 1
            return
        control.failed[index] += 1

    # Connecting and following the control run side by side: the orchestrator may start the
    # window (or stop) while slow connections are still being opened; stopping cancels them.
    async with asyncio.TaskGroup() as group:
        connecting = [group.create_task(open_one()) for _ in range(plan.connections)]
        while not control.times[2] and loop.time() < deadline:
            worker.window_start = control.times[0] or math.inf
            worker.window_end = control.times[1] or math.inf
            await asyncio.sleep(_POLL)
        worker.stopping = True
        for task in connecting:
            task.cancel()
    for stream in worker.streams:
        if stream.transport is not None:
            stream.transport.close()
    await asyncio.sleep(0)  # let connection_lost run for the closed transports
    for stream in worker.streams:
        worker.tally.heartbeats += stream.parser.comments
        stream.parser.comments = 0
    worker.fold()
    return worker.tally


def _worker_main(plan: LoadPlan, control: Control, index: int, results: Connection) -> None:
    raise_open_files_limit()
    try:
        import uvloop

        tally = uvloop.run(_run_worker(plan, control, index))
    except ImportError:
        tally = asyncio.run(_run_worker(plan, control, index))
    results.send(tally)
    results.close()
    control.done[index] = 1


class LoadRun:
    """The worker processes of one measurement, owned by the orchestrator.

    Use as a context manager: leaving it stops the workers and, if they did
    not finish in time, terminates them, so no load process outlives a run.
    """

    def __init__(self, plan: LoadPlan, processes: int) -> None:
        self._context = multiprocessing.get_context("spawn")
        count = max(1, min(processes, plan.connections or 1))
        self.control = Control(self._context, count)
        self._procs: list[tuple[SpawnProcess, Connection]] = []
        share, extra = divmod(plan.connections, count)
        self._plans = [
            LoadPlan(**{**_as_kwargs(plan), "connections": share + (1 if i < extra else 0)}) for i in range(count)
        ]

    def __enter__(self) -> LoadRun:
        for index, plan in enumerate(self._plans):
            receiver, sender = self._context.Pipe(duplex=False)
            proc = self._context.Process(
                target=_worker_main, args=(plan, self.control, index, sender), name=f"bench-load-{index}", daemon=True
            )
            proc.start()
            sender.close()
            self._procs.append((proc, receiver))
        return self

    def __exit__(self, *_: object) -> None:
        self.control.stop()
        for proc, receiver in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            receiver.close()

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc, _ in self._procs if proc.pid is not None]

    def opened(self) -> int:
        return sum(self.control.opened)

    def failed(self) -> int:
        return sum(self.control.failed)

    def alive(self) -> bool:
        return any(proc.is_alive() for proc, _ in self._procs)

    def collect(self, timeout: float) -> Tally:
        """Stop the workers and merge their tallies; a worker that does not answer in time is reported."""
        self.control.stop()
        merged = Tally()
        deadline = time.monotonic() + timeout
        for proc, receiver in self._procs:
            remaining = max(0.0, deadline - time.monotonic())
            if receiver.poll(remaining):
                try:
                    merged.merge(receiver.recv())
                except EOFError:
                    merged.errors[f"load worker {proc.name} died (exit code {proc.exitcode})"] += 1
            else:
                merged.errors[f"load worker {proc.name} gave no result within {timeout:.0f}s"] += 1
        return merged


def _as_kwargs(plan: LoadPlan) -> dict[str, Any]:
    return {name: getattr(plan, name) for name in plan.__dataclass_fields__}
