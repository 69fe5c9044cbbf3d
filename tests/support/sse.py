"""Server-Sent Events for the tests and the benchmark: one parser, the clients on it, one set of continuity checks.

On pytest's ``pythonpath`` (and the benchmark's, see ``bench/__init__.py``): ``from sse import sse, EventSource``.

- :class:`EventStreamParser` reads an event stream as the WHATWG HTML standard says a browser does
  (section 9.2.6, "Interpreting an event stream"): ``event``, ``data`` (lines joined with ``\\n``), ``id``
  (kept across events, ignored when it holds NUL), ``retry`` (digits only), comments, unknown fields
  ignored, a field without a colon, one leading BOM, lines ending in CRLF, LF or a lone CR, and all of it
  split anywhere across reads. Bytes in, :class:`RawEvent` out, no I/O: the benchmark's load client runs
  it on thousands of connections, so it works on whole ``bytes`` blocks, not character by character.
- :class:`Event` is a dispatched event as a test looks at it: its type, its data parsed as JSON, its own
  ``id``, the block as received, when it arrived and on which connection.
- Clients: :func:`sse` (an ``httpx`` stream read with :class:`EventReader`, async), :func:`iter_events`
  and :func:`read_stream` (the same over a synchronous ``httpx`` response), :class:`Connection` (one
  HTTP/1.1 GET over plain asyncio streams, cheap enough to hold hundreds) and :class:`EventSource` (a
  browser's reconnecting client over connections: ``retry:``, ``Last-Event-ID``, the next replica).
- Continuity: :func:`seqs_by_series`, :func:`gaps_and_duplicates`, :func:`assert_contiguous`,
  :func:`assert_continuous`. A series is continuous when consecutive sequences are exactly one step
  apart: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast
from urllib.parse import urlsplit

import httpx
import orjson
from services import FREQUENCY_MS

__all__ = [
    "Connection",
    "Event",
    "EventReader",
    "EventSource",
    "EventStreamParser",
    "RawEvent",
    "assert_contiguous",
    "assert_continuous",
    "following",
    "gaps_and_duplicates",
    "iter_events",
    "now_ms",
    "parse",
    "read_stream",
    "seqs_by_series",
    "sse",
]

_BOM = b"\xef\xbb\xbf"


def now_ms() -> int:
    """This machine's wall clock in epoch milliseconds (what the generator stamps points with)."""
    return time.time_ns() // 1_000_000


# --- the parser -------------------------------------------------------------------------------------


class RawEvent(NamedTuple):
    """One dispatched event, as bytes: ``type`` (``message`` by default), ``data``, and the block's own ``id``.

    ``id`` is the ``id:`` field of this event's block (None when it had none); the id a browser would send
    back on reconnect is :attr:`EventStreamParser.last_event_id`, which persists across events. ``raw`` is
    the block as received, its lines joined with ``\\n`` whatever their original ends.
    """

    type: bytes
    data: bytes
    id: bytes | None
    raw: bytes


class EventStreamParser:
    """Incremental event-stream parser: :meth:`feed` takes what a read returned, gives the events it completed.

    Comment-only and ``retry``-only blocks are not events (as in a browser); comments are counted in
    :attr:`comments`, the last valid ``retry:`` is in :attr:`retry`. With ``record=True`` every block and
    comment line is kept too (:attr:`blocks`, :attr:`comment_lines`), for tests that look at framing.
    """

    __slots__ = ("_buffer", "_skip_lf", "_started", "blocks", "comment_lines", "comments", "last_event_id", "retry")

    def __init__(self, *, last_event_id: bytes = b"", record: bool = False) -> None:
        self._buffer = b""
        self._skip_lf = False  # a read ended in CR, taken as a line end at once: an LF next is part of it
        self._started = False  # past the optional BOM at the start of the stream
        self.comments = 0
        self.retry: int | None = None
        #: WHATWG's "last event ID buffer": kept across events and, by an EventSource, across connections.
        self.last_event_id = last_event_id
        self.blocks: list[bytes] | None = [] if record else None
        self.comment_lines: list[bytes] | None = [] if record else None

    @property
    def pending(self) -> bytes:
        """What was read but does not finish a block yet (line ends already made ``\\n``)."""
        return self._buffer

    def feed(self, data: bytes) -> list[RawEvent]:
        if self._skip_lf and data:
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
        if not self._started:
            data = self._buffer + data
            self._buffer = b""
            if len(data) < len(_BOM) and _BOM.startswith(data):
                self._buffer = data  # maybe the start of a BOM: wait for more
                return []
            self._started = True
            data = data.removeprefix(_BOM)
        if b"\r" in data:
            # A CR ends a line by itself (a browser does not wait to see what follows it), so one that ends
            # this read is a line end now, and an LF starting the next read belongs to it.
            self._skip_lf = data[-1] == 0x0D
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + data if self._buffer else data
        if b"\n\n" not in buffer:
            self._buffer = buffer
            return []
        blocks = buffer.split(b"\n\n")
        self._buffer = blocks.pop()
        events: list[RawEvent] = []
        for block in blocks:
            if block:
                event = self._block(block)
                if event is not None:
                    events.append(event)
        return events

    def _block(self, block: bytes) -> RawEvent | None:
        if self.blocks is not None:
            self.blocks.append(block)
        kind = b"message"
        data: list[bytes] = []
        ident: bytes | None = None
        for line in block.split(b"\n"):
            if not line:
                continue  # a blank line at a block's start: a dispatch with nothing buffered
            if line[0] == 0x3A:  # ":" starts a comment
                self.comments += 1
                if self.comment_lines is not None:
                    self.comment_lines.append(line)
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event":
                kind = value or b"message"
            elif name == b"id":
                if b"\0" not in value:
                    ident = self.last_event_id = value
            elif name == b"retry" and value.isdigit():
                self.retry = int(value)
        if not data:
            return None
        return RawEvent(kind, data[0] if len(data) == 1 else b"\n".join(data), ident, block)


# --- events as tests see them -----------------------------------------------------------------------


@dataclass
class Event:
    """A dispatched event: ``data`` is parsed as JSON (the streamer's events always are), or is the text."""

    event: str
    data: Any
    id: str | None
    raw: bytes = b""
    received_ms: int = 0
    connection: int = 0

    @classmethod
    def of(cls, raw: RawEvent, connection: int = 0) -> Event:
        try:
            data = orjson.loads(raw.data)
        except orjson.JSONDecodeError:
            data = raw.data.decode("utf-8", errors="replace")
        ident = raw.id.decode("utf-8", errors="replace") if raw.id is not None else None
        return cls(raw.type.decode("utf-8", errors="replace"), data, ident, raw.raw, now_ms(), connection)


def parse(stream: bytes) -> list[Event]:
    """Every complete event in ``stream`` (a whole body, or what was read of one)."""
    return [Event.of(raw) for raw in EventStreamParser().feed(stream)]


class EventReader:
    """An SSE stream over an ``httpx`` streaming response, read event by event (async).

    ``retry``, ``comments`` (comment lines as received) and ``blocks`` (every block, events or not) stay
    visible, for tests of the framing; ``events`` holds every event read so far.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = EventStreamParser(record=True)
        self._chunks = response.aiter_bytes()
        self._pending: deque[Event] = deque()
        self.events: list[Event] = []

    @property
    def retry(self) -> int | None:
        return self.parser.retry

    @property
    def comments(self) -> list[bytes]:
        assert self.parser.comment_lines is not None
        return self.parser.comment_lines

    @property
    def blocks(self) -> list[bytes]:
        assert self.parser.blocks is not None
        return self.parser.blocks

    async def next(self, timeout: float = 10.0) -> Event:
        """The next event (retry-only blocks and comments are not events)."""
        async with asyncio.timeout(timeout):
            while not self._pending:
                self._pending.extend(Event.of(raw) for raw in self.parser.feed(await anext(self._chunks)))
        event = self._pending.popleft()
        self.events.append(event)
        return event

    async def until(self, predicate: Callable[[Event], bool], timeout: float = 15.0) -> list[Event]:
        """Events up to and including the first that satisfies ``predicate``."""
        seen: list[Event] = []
        deadline = time.monotonic() + timeout
        while True:
            event = await self.next(max(0.1, deadline - time.monotonic()))
            seen.append(event)
            if predicate(event):
                return seen

    async def rest(self, timeout: float = 10.0) -> bytes:
        """Everything until the server ends the response: events read but not taken (as blocks), then the bytes."""
        taken = b"".join(event.raw + b"\n\n" for event in self._pending)
        self._pending.clear()
        async with asyncio.timeout(timeout):
            return taken + self.parser.pending + b"".join([chunk async for chunk in self._chunks])


@contextlib.asynccontextmanager
async def sse(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[EventReader]:
    """Open an SSE stream with ``httpx`` and read it with :class:`EventReader`."""
    timeout = httpx.Timeout(30.0, read=30.0)
    async with (
        httpx.AsyncClient(timeout=timeout) as client,
        client.stream("GET", url, headers=headers or {}) as response,
    ):
        yield EventReader(response)


def iter_events(response: httpx.Response) -> Iterator[Event]:
    """The events of a synchronous ``httpx`` streaming response, as they arrive."""
    parser = EventStreamParser()
    for chunk in response.iter_bytes():
        for raw in parser.feed(chunk):
            yield Event.of(raw)


def read_stream(url: str, count: int, headers: dict[str, str] | None = None, timeout: float = 30.0) -> list[Event]:
    """Open an SSE stream, read ``count`` snapshot/points events, close it (synchronous)."""
    events: list[Event] = []
    with httpx.Client(timeout=httpx.Timeout(timeout)) as client, client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, response.read()
        for event in iter_events(response):
            if event.event in ("snapshot", "points"):
                events.append(event)
                if len(events) >= count:
                    break
    return events


# --- raw connections and a browser's EventSource ----------------------------------------------------


class Connection:
    """One HTTP/1.1 GET over plain asyncio streams (no client library per connection); the body as chunks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}

    @classmethod
    async def open(cls, url: str, headers: dict[str, str] | None = None, *, rcvbuf: int | None = None) -> Connection:
        parts = urlsplit(url)
        if rcvbuf is not None:
            # A small receive window makes a client that never reads look stalled to the server quickly.
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        else:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Accept: text/event-stream"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        connection = cls(reader, writer)
        try:
            await connection._read_head()
        except BaseException:
            connection.close()
            raise
        return connection

    async def _read_head(self) -> None:
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ", 2)[1])
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                self.headers[name.strip().lower()] = value.strip()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk (chunked transfer coding or a Content-Length body)."""
        if "content-length" in self.headers:
            yield await self.reader.readexactly(int(self.headers["content-length"]))
            return
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return
            data = await self.reader.readexactly(size + 2)
            yield data[:-2]

    async def events(self, parser: EventStreamParser | None = None) -> AsyncIterator[Event]:
        """The body's events until the server ends it (through ``parser`` when given, to see its state)."""
        parser = parser or EventStreamParser()
        async for chunk in self.chunks():
            for raw in parser.feed(chunk):
                yield Event.of(raw)

    async def body(self, timeout: float = 10.0) -> bytes:
        async with asyncio.timeout(timeout):
            return b"".join([chunk async for chunk in self.chunks()])

    def stop_reading(self) -> None:
        """Read nothing more, from now on: what the server sends piles up in the kernel's buffers only."""
        cast(asyncio.Transport, self.writer.transport).pause_reading()  # a socket transport reads too

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


@dataclass
class EventSource:
    """A browser's EventSource over one or more base URLs (replicas behind a balancer).

    ``run()`` connects, records, and reconnects with ``Last-Event-ID`` until cancelled, waiting the server's
    ``retry:`` in between. A connection that fails or answers non-200 moves to the next URL; so does a
    stream that ends (a draining pod says so). Every event is kept, and every point's sequence per series
    (:attr:`seqs`; the points themselves, values and links included: :meth:`points`).
    """

    urls: list[str]
    path: str
    retry_ms: int = 200
    events: list[Event] = field(default_factory=list)
    seqs: dict[str, list[int]] = field(default_factory=dict)
    lags_ms: list[int] = field(default_factory=list)
    last_id: str | None = None
    connections: int = 0
    failures: list[str] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _index: int = 0

    @property
    def url(self) -> str:
        return self.urls[self._index % len(self.urls)]

    def _next_url(self) -> None:
        self._index += 1

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.event == kind]

    def points(self, series: str) -> list[dict[str, Any]]:
        """Every point of ``series`` received so far (snapshots and points events, d3 format), in arrival order."""
        return [
            point
            for event in self.events
            if event.event in ("snapshot", "points") and isinstance(event.data, dict)
            for point in event.data.get("points", ())
            if point["series"] == series
        ]

    def last_seq(self) -> int:
        return max((s[-1] for s in self.seqs.values() if s), default=0)

    def _record(self, event: Event) -> None:
        self.events.append(event)
        if event.event in ("snapshot", "points") and isinstance(event.data, dict):
            points = event.data.get("points", [])
            for point in points:
                self.seqs.setdefault(point["series"], []).append(point["seq"])
            if event.event == "points" and points:
                self.lags_ms.append(event.received_ms - max(p["t"] for p in points))

    async def run(self) -> None:
        while True:
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                connection = await asyncio.wait_for(Connection.open(self.url + self.path, headers), 5)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
                self.failures.append(f"{self.url}: {error!r}")
                self._next_url()
                await asyncio.sleep(self.retry_ms / 1000)
                continue
            try:
                if connection.status != 200:
                    body = await connection.body()
                    self.failures.append(f"{self.url}: HTTP {connection.status} {body[:200]!r}")
                    self._next_url()
                else:
                    await self._follow(connection)
                    self._next_url()  # the server ended the stream: like a balancer, try the next replica
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
                self.failures.append(f"{self.url}: {error!r}")
            finally:
                connection.close()
            await asyncio.sleep(self.retry_ms / 1000)

    async def _follow(self, connection: Connection) -> None:
        self.connections += 1
        self.connected.set()
        # The last event id outlives a connection (WHATWG): the next one resumes from it.
        parser = EventStreamParser(last_event_id=(self.last_id or "").encode())
        async for chunk in connection.chunks():
            for raw in parser.feed(chunk):
                self._record(Event.of(raw, self.connections))
            self.last_id = parser.last_event_id.decode() or None
            if parser.retry is not None:
                self.retry_ms = parser.retry

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 20.0, what: str = "event") -> Event:
        """The first recorded event (from now on, or already seen) satisfying ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what}; failures: {self.failures[-3:]}"
                )
            await asyncio.sleep(0.02)

    async def wait_past(self, seq: int, timeout: float = 20.0) -> None:
        """Until every series this client follows has a point after ``seq``."""
        deadline = time.monotonic() + timeout
        while not self.seqs or min(s[-1] for s in self.seqs.values()) <= seq:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no points after {seq} within {timeout:.0f}s (last {self.last_seq()}); "
                    f"failures: {self.failures[-3:]}"
                )
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def following(*sources: EventSource) -> AsyncIterator[list[EventSource]]:
    """Run ``sources`` for the body's duration (each waits for its first connection first)."""
    tasks = [asyncio.create_task(source.run(), name=f"eventsource-{i}") for i, source in enumerate(sources)]
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(source.connected.wait() for source in sources))
        yield list(sources)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- continuity -------------------------------------------------------------------------------------


def seqs_by_series(events: Iterable[Event]) -> dict[str, list[int]]:
    """The sequences each series got across ``events`` (snapshot and points events, d3 format), in arrival order."""
    out: dict[str, list[int]] = {}
    for event in events:
        if event.event in ("snapshot", "points") and isinstance(event.data, dict):
            for point in event.data.get("points", ()):
                out.setdefault(point["series"], []).append(point["seq"])
    return out


def gaps_and_duplicates(seqs: list[int], step: int = FREQUENCY_MS) -> list[tuple[int, int]]:
    """Consecutive pairs that are not exactly one ``step`` apart (empty = continuous)."""
    return [(a, b) for a, b in itertools.pairwise(seqs) if b - a != step]


def assert_contiguous(seqs: list[int], step: int = FREQUENCY_MS) -> None:
    """Strictly increasing by exactly one ``step`` (the test generator's period by default): no gap, no duplicate."""
    assert seqs, "no points"
    bad = gaps_and_duplicates(seqs, step)
    assert not bad, f"not contiguous: {len(bad)} of {len(seqs) - 1} steps are not {step}, first {bad[:5]}"


def assert_continuous(source: EventSource, series: set[str], step: int = FREQUENCY_MS) -> None:
    """Every series in ``series`` was received, one step apart throughout: no gap, no duplicate, no reset."""
    assert set(source.seqs) == series, f"series received: {sorted(source.seqs)}"
    for name, seqs in source.seqs.items():
        bad = gaps_and_duplicates(seqs, step)
        assert not bad, f"{name}: {len(bad)} gaps/duplicates, first {bad[:5]} (of {len(seqs)} points)"
    resets = [e for e in source.of("snapshot") if e.data.get("reset")]
    assert not resets, f"a reconnect was answered with a reset snapshot: {resets[0].data.get('meta')}"
