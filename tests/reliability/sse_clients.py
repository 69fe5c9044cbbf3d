"""SSE clients for the reliability tests: a browser-like ``EventSource`` and cheap raw connections.

All of them speak HTTP/1.1 over plain asyncio streams (no client library per connection), so a test can hold
hundreds of them on two cores. :class:`EventSource` behaves as a browser's does: it keeps the last event id,
honours ``retry:``, and after the stream ends or the server is unreachable it reconnects with
``Last-Event-ID``, moving to the next base URL when one is given (a load balancer's view of replicas). It
records every event and every point's sequence, so a test can assert that each series is continuous across
every fault: consecutive sequences one period apart, no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from service_processes import FREQUENCY_MS


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Event:
    event: str
    data: Any
    id: str | None
    received_ms: int
    connection: int = 0


class HttpError(Exception):
    """The server answered with something other than 200 (status, headers, body)."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status
        self.headers = headers
        self.body = body


class Connection:
    """One HTTP/1.1 GET over asyncio streams; the body as decoded chunks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}

    @classmethod
    async def open(cls, url: str, headers: dict[str, str] | None = None, *, rcvbuf: int | None = None) -> Connection:
        parts = urlsplit(url)
        sock_options: dict[str, Any] = {}
        if rcvbuf is not None:
            # A small receive window makes a client that never reads look stalled to the server quickly.
            import socket

            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
            sock_options = {"sock": sock}
            reader, writer = await asyncio.open_connection(**sock_options, limit=1 << 20)
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

    async def body(self, timeout: float = 10.0) -> bytes:
        async with asyncio.timeout(timeout):
            return b"".join([chunk async for chunk in self.chunks()])

    def stop_reading(self) -> None:
        """Read nothing more, from now on: what the server sends piles up in the kernel's buffers only."""
        self.writer.transport.pause_reading()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()


def parse_block(block: bytes) -> tuple[str, list[bytes], str | None, int | None]:
    """One SSE block: (event name, data lines, id, retry)."""
    event, data, event_id, retry = "message", [], None, None
    for line in block.split(b"\n"):
        if line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"event":
            event = value.decode()
        elif name == b"data":
            data.append(value)
        elif name == b"id":
            event_id = value.decode()
        elif name == b"retry" and value.isdigit():
            retry = int(value)
    return event, data, event_id, retry


async def events_of(connection: Connection) -> AsyncIterator[tuple[str, Any, str | None, int | None]]:
    """Parsed SSE events (event, JSON data or None, id, retry) until the server ends the body."""
    buffer = b""
    async for chunk in connection.chunks():
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            event, data, event_id, retry = parse_block(block)
            yield event, orjson.loads(b"\n".join(data)) if data else None, event_id, retry


@dataclass
class EventSource:
    """A browser's EventSource over one or more base URLs (replicas behind a balancer).

    ``run()`` connects, records, and reconnects with ``Last-Event-ID`` until cancelled. A connection that
    fails or answers non-200 moves to the next URL; so does a stream that ends (a draining pod says so).
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

    def last_seq(self) -> int:
        return max((s[-1] for s in self.seqs.values() if s), default=0)

    def _record(self, event: str, data: Any, event_id: str | None) -> None:
        received = now_ms()
        self.events.append(Event(event, data, event_id, received, self.connections))
        if event_id is not None:
            self.last_id = event_id
        if event in ("snapshot", "points") and isinstance(data, dict):
            points = data.get("points", [])
            for point in points:
                self.seqs.setdefault(point["series"], []).append(point["seq"])
            if event == "points" and points:
                self.lags_ms.append(received - max(p["t"] for p in points))

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
                    self.connections += 1
                    self.connected.set()
                    async for event, data, event_id, retry in events_of(connection):
                        if retry is not None:
                            self.retry_ms = retry
                        if data is not None:
                            self._record(event, data, event_id)
                    self._next_url()  # the server ended the stream: like a balancer, try the next replica
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
                self.failures.append(f"{self.url}: {error!r}")
            finally:
                connection.close()
            await asyncio.sleep(self.retry_ms / 1000)

    async def wait_for(self, predicate: Any, timeout: float = 20.0, what: str = "event") -> Event:
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


def gaps_and_duplicates(seqs: list[int], step: int = FREQUENCY_MS) -> list[tuple[int, int]]:
    """Consecutive pairs that are not exactly one period apart (empty = continuous)."""
    return [(a, b) for a, b in itertools.pairwise(seqs) if b - a != step]


def assert_continuous(source: EventSource, series: set[str], step: int = FREQUENCY_MS) -> None:
    """Every series in ``series`` was received, one period apart throughout: no gap, no duplicate, no reset."""
    assert set(source.seqs) == series, f"series received: {sorted(source.seqs)}"
    for name, seqs in source.seqs.items():
        bad = gaps_and_duplicates(seqs, step)
        assert not bad, f"{name}: {len(bad)} gaps/duplicates, first {bad[:5]} (of {len(seqs)} points)"
    resets = [e for e in source.of("snapshot") if e.data.get("reset")]
    assert not resets, f"a reconnect was answered with a reset snapshot: {resets[0].data.get('meta')}"


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
