"""Real parts for the streamer tests (fixtures in conftest.py).

The generator runs as a subprocess, the streamer in-process on port 0.

The generator runs from its console script (``pulsestream-generator``) on a
free loopback port, at a 50 ms frequency with a short retention so it starts
fast. The streamer is the real app under the real uvicorn server
(:func:`pulsestream_streamer.__main__.build_server`) in the test's event loop,
so tests can also look at its registry and hub. Clients are real HTTP clients
(httpx + a small SSE parser, or raw sockets). Every wait is on a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from loopback import port_open, wait_until
from processes import stop_process
from pulsestream_streamer.http.server import StreamerServer, build_server
from pulsestream_streamer.settings import StreamerSettings

BIN = Path(sys.executable).parent
FREQUENCY_MS = 50


@dataclass
class Generator:
    """A generator process on a fixed port that tests may kill and start again."""

    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "GENERATOR_PORT": str(self.port),
            "GENERATOR_FREQUENCY": f"{FREQUENCY_MS}ms",
            "GENERATOR_RETENTION": "2m",
            "GENERATOR_METRICS_PORT": "0",
            "LOG_LEVEL": "info",
            **self.env,
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([str(BIN / "pulsestream-generator")], env=env, stdout=out, stderr=out)

    def wait_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"generator exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("generator did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc, grace=15)


@dataclass
class Streamer:
    """An in-process streamer: its URL, settings, app state and server."""

    server: StreamerServer
    settings: StreamerSettings
    url: str

    @property
    def state(self) -> Any:
        return self.server.streamer_app.state

    async def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample from /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        async with httpx.AsyncClient() as client:
            text = (await client.get(self.url + "/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    return float(sample.value)
        return 0.0


@contextlib.asynccontextmanager
async def run_streamer(generator_address: str, **overrides: str) -> AsyncIterator[Streamer]:
    """Start the real streamer on a free port against ``generator_address``; stop it afterwards."""
    # Generous per-client limits: every test client comes from 127.0.0.1 (the limits have their own tests).
    folder = tempfile.TemporaryDirectory(prefix="streamer-")
    live = Path(folder.name) / "settings.yaml"
    live.write_text("rateLimit: {requestsPerSecond: 10000, burst: 10000, maxStreamsPerClient: 10000}\n")
    env = {
        "PULSESTREAM_SETTINGS_FILE": str(live),
        "STREAMER_PORT": "0",
        "STREAMER_GENERATOR_ADDRESS": generator_address,
        "STREAMER_RECONNECT_BASE": "50ms",
        "STREAMER_RECONNECT_CAP": "300ms",
        "STREAMER_HUB_LINGER": "0ms",
        "STREAMER_GRACEFUL_SHUTDOWN": "2s",
        **{f"STREAMER_{key.upper()}": value for key, value in overrides.items()},
    }
    settings = StreamerSettings.from_env(env)
    server = build_server(settings)
    task = asyncio.create_task(server.serve(sockets=[server.bind()]))
    try:
        await wait_until(lambda: server.started or task.done(), what="streamer start")
        if task.done():
            task.result()
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Streamer(server, settings, f"http://127.0.0.1:{port}")
    finally:
        server.streamer_app.state.hub.drain()  # what SIGTERM does first
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        folder.cleanup()


@dataclass
class Event:
    event: str
    data: Any
    id: str | None
    raw: bytes


class EventReader:
    """A minimal SSE reader over an httpx streaming response (keeps ``retry`` and comments visible)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.aiter_bytes()
        self._buffer = b""
        self.retry: int | None = None
        self.comments: list[bytes] = []
        self.blocks: list[bytes] = []
        self.events: list[Event] = []

    async def _block(self) -> bytes:
        while b"\n\n" not in self._buffer:
            self._buffer += await anext(self._chunks)
        block, self._buffer = self._buffer.split(b"\n\n", 1)
        self.blocks.append(block)
        return block

    async def next(self, timeout: float = 10.0) -> Event:
        """The next event with data (skips retry-only blocks and comments)."""
        async with asyncio.timeout(timeout):
            while True:
                block = await self._block()
                event, data, event_id = "message", [], None
                for line in block.split(b"\n"):
                    if line.startswith(b":"):
                        self.comments.append(line)
                    elif line.startswith(b"retry: "):
                        self.retry = int(line[7:])
                    elif line.startswith(b"event: "):
                        event = line[7:].decode()
                    elif line.startswith(b"id: "):
                        event_id = line[4:].decode()
                    elif line.startswith(b"data: "):
                        data.append(line[6:])
                if data:
                    parsed = Event(event, orjson.loads(b"\n".join(data)), event_id, block)
                    self.events.append(parsed)
                    return parsed

    async def rest(self, timeout: float = 10.0) -> bytes:
        """Everything until the server ends the response."""
        async with asyncio.timeout(timeout):
            return self._buffer + b"".join([chunk async for chunk in self._chunks])

    async def until(self, predicate: Callable[[Event], bool], timeout: float = 15.0) -> list[Event]:
        """Events up to and including the first that satisfies ``predicate``."""
        seen: list[Event] = []
        deadline = time.monotonic() + timeout
        while True:
            event = await self.next(max(0.1, deadline - time.monotonic()))
            seen.append(event)
            if predicate(event):
                return seen


@contextlib.asynccontextmanager
async def sse(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[EventReader]:
    """Open an SSE stream and read it with :class:`EventReader`."""
    timeout = httpx.Timeout(30.0, read=30.0)
    async with (
        httpx.AsyncClient(timeout=timeout) as client,
        client.stream("GET", url, headers=headers or {}) as response,
    ):
        yield EventReader(response)


def seqs_by_series(events: list[Event]) -> dict[str, list[int]]:
    """The sequences each series got across ``events`` (d3 format), in arrival order."""
    out: dict[str, list[int]] = {}
    for event in events:
        if event.event in ("snapshot", "points"):
            for point in event.data["points"]:
                out.setdefault(point["series"], []).append(point["seq"])
    return out


def assert_contiguous(seqs: list[int], step: int = FREQUENCY_MS) -> None:
    """Strictly increasing by exactly one tick: no gap, no duplicate."""
    assert seqs, "no points"
    steps = {b - a for a, b in itertools.pairwise(seqs)}
    assert steps <= {step}, f"not contiguous: steps {sorted(steps)[:10]}"
