"""Third-party SSE clients see no spurious events (issue 16): npm ``eventsource`` and httpx-sse.

With the old wire, npm ``eventsource`` dispatched the server's ``event: error`` (``max_lifetime``) to
``onerror`` while the connection was still open, and httpx-sse yielded the ``retry:``-only block as an empty
message. Here streams end every ~2 s (``STREAMER_CLIENT_MAX_LIFETIME``) and the generator is SIGKILLed and
restarted, and: ``error`` only ever fires with the connection not open; no unnamed message and no empty event;
the notices arrive as ``notice``; the retry rides on the snapshot. The bare EventSource resumes on its own
(``Last-Event-ID``) and pulsestream.js on top of the npm class keeps a contiguous window.

npm ``eventsource`` is installed from the registry into a temporary folder (CI installs what the tests
need); off CI a machine without npm or the registry skips, under ``CI=true`` it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from services import Generator, Stack, StreamerProcess
from sse import gaps_and_duplicates
from tools import missing, node, npm

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

WATCHER = Path(__file__).parent / "node" / "watch_eventsource.mjs"
EVENTSOURCE = "eventsource@4"  # WhatWG EventSource for Node 20 (v5 needs Node 22)
TICK_MS = 100
RETRY_MS = 300
API_KEY = "client+test/key="


@pytest.fixture(scope="module")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node()
    folder = tmp_path_factory.mktemp("npm")
    try:
        result = subprocess.run(
            [npm(), "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(folder), EVENTSOURCE],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        missing("npm install eventsource timed out")
    if result.returncode != 0:
        missing(f"npm install {EVENTSOURCE} failed: {result.stderr[-500:]}")
    return folder


class Watcher:
    """The node process: its lines as they come, and a way to wait for one."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    async def read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(json.loads(raw))

    async def until(self, predicate: Callable[[dict[str, Any]], bool], what: str, start: int = 0) -> int:
        async with asyncio.timeout(30):
            while True:
                for index in range(start, len(self.lines)):
                    if predicate(self.lines[index]):
                        return index
                if self.process.returncode is not None:
                    raise AssertionError(f"the watcher exited waiting for {what}")
                await asyncio.sleep(0.05)


async def follow_with_httpx_sse(base: str, seen: list[tuple[str, str, int | None]], stop: asyncio.Event) -> None:
    """httpx-sse as a user would drive it: reconnect with Last-Event-ID after each end, keep every event."""
    last = ""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as client:
        while not stop.is_set():
            headers = {"Authorization": f"Bearer {API_KEY}", **({"Last-Event-ID": last} if last else {})}
            with contextlib.suppress(httpx.TransportError):
                async with aconnect_sse(client, "GET", base + "/v1/stream?series=cpu&window=2s", headers=headers) as es:
                    async for event in es.aiter_sse():
                        seen.append((event.event, event.data, event.retry))
                        last = event.id or last
                        if stop.is_set():
                            return
            await asyncio.sleep(0.2)


async def test_npm_eventsource_and_httpx_sse_see_no_spurious_events(node_modules: Path, stack: Stack) -> None:
    generator = await stack.aio.generator(GENERATOR_FREQUENCY=f"{TICK_MS}ms")
    streamer = await stack.aio.streamer(
        generator, STREAMER_API_KEYS=API_KEY, STREAMER_CLIENT_MAX_LIFETIME="2s", STREAMER_SSE_RETRY=f"{RETRY_MS}ms"
    )
    await streamer.aio.wait_health()
    await _watch(generator, streamer, node_modules)


async def _watch(generator: Generator, streamer: StreamerProcess, node_modules: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        node(),
        str(WATCHER),
        streamer.url,
        API_KEY,
        str(node_modules),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    watcher = Watcher(process)
    reading = asyncio.create_task(watcher.read())
    seen: list[tuple[str, str, int | None]] = []
    stop = asyncio.Event()
    httpx_sse = asyncio.create_task(follow_with_httpx_sse(streamer.url, seen, stop))
    try:
        lifetime = await watcher.until(lambda e: e["kind"] == "notice" and e["code"] == "max_lifetime", "max_lifetime")
        generator.kill()
        down = await watcher.until(lambda e: e.get("code") == "upstream_unavailable", "upstream_unavailable", lifetime)
        generator.start()
        await generator.aio.wait_ready()
        back = await watcher.until(lambda e: e["kind"] == "points", "points after the restart", down)
        await watcher.until(lambda e: e.get("code") == "max_lifetime", "another max_lifetime", back)
        await watcher.until(lambda e: e["kind"] == "snapshot" and e["resumed"], "a resumed snapshot", back)
        assert process.stdin is not None
        process.stdin.write(b"end\n")
        await process.stdin.drain()
        await asyncio.wait_for(process.wait(), 10)
        await reading
    finally:
        stop.set()
        if process.returncode is None:
            process.kill()
        await asyncio.gather(httpx_sse, return_exceptions=True)

    lines = watcher.lines
    summary = lines[-1]
    assert summary["kind"] == "summary"
    events = lines[:-1]
    errors = [e for e in events if e["kind"] == "error"]
    assert errors, "streams did end (max_lifetime), so EventSource reconnected"
    assert all(e["readyState"] != 1 for e in errors), f"onerror fired on an open connection: {errors}"
    assert not [e for e in events if e["kind"] == "message"], "no unnamed message"
    codes = {e["code"] for e in events if e["kind"] == "notice"}
    assert {"max_lifetime", "upstream_unavailable"} <= codes, codes
    assert not [e for e in events if e["kind"] == "snapshot" and e["reset"]], "every reconnect resumed"
    bad = gaps_and_duplicates(summary["seqs"], TICK_MS)
    assert not bad, f"the bare EventSource's points: {bad[:5]}"
    module = summary["module"]
    # Streams end every ~2 s, so the module may be between two at the end; it came back live after each.
    assert module["reconnects"] >= 1 and "live" in module["statuses"][1:], module
    assert len(module["window"]) > 20 and not gaps_and_duplicates(module["window"], TICK_MS), (
        f"pulsestream.js on npm eventsource: {module}"
    )

    names = {name for name, _, _ in seen}
    assert names <= {"snapshot", "points", "notice"}, names
    assert all(data for _, data, _ in seen), "httpx-sse yielded an empty event"
    snapshots = [retry for name, _, retry in seen if name == "snapshot"]
    assert len(snapshots) >= 2 and all(retry == RETRY_MS for retry in snapshots), snapshots
    notices = [json.loads(data)["code"] for name, data, _ in seen if name == "notice"]
    assert "max_lifetime" in notices, notices
