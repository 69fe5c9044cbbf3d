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
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from client_stack import API_KEY, Stack, running, steps
from httpx_sse import aconnect_sse

WATCHER = Path(__file__).parent / "js" / "watch_eventsource.mjs"
EVENTSOURCE = "eventsource@4"  # WhatWG EventSource for Node 20 (v5 needs Node 22)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        _unavailable("node and npm are needed")
    folder = tmp_path_factory.mktemp("npm")
    try:
        result = subprocess.run(
            [str(npm), "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(folder), EVENTSOURCE],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        _unavailable("npm install eventsource timed out")
    if result.returncode != 0:
        _unavailable(f"npm install {EVENTSOURCE} failed: {result.stderr[-500:]}")
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


async def test_npm_eventsource_and_httpx_sse_see_no_spurious_events(node_modules: Path, tmp_path: Path) -> None:
    with running(tmp_path, STREAMER_CLIENT_MAX_LIFETIME="2s") as stack:
        await stack.start()
        await _watch(stack, node_modules)


async def _watch(stack: Stack, node_modules: Path) -> None:
    assert stack.generator is not None
    process = await asyncio.create_subprocess_exec(
        "node",
        str(WATCHER),
        stack.base,
        API_KEY,
        str(node_modules),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    watcher = Watcher(process)
    reading = asyncio.create_task(watcher.read())
    seen: list[tuple[str, str, int | None]] = []
    stop = asyncio.Event()
    httpx_sse = asyncio.create_task(follow_with_httpx_sse(stack.base, seen, stop))
    try:
        lifetime = await watcher.until(lambda e: e["kind"] == "notice" and e["code"] == "max_lifetime", "max_lifetime")
        stack.generator.kill()
        down = await watcher.until(lambda e: e.get("code") == "upstream_unavailable", "upstream_unavailable", lifetime)
        await stack.start_generator()
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
    assert not steps(summary["seqs"]), f"the bare EventSource's points: {steps(summary['seqs'])[:5]}"
    module = summary["module"]
    # Streams end every ~2 s, so the module may be between two at the end; it came back live after each.
    assert module["reconnects"] >= 1 and "live" in module["statuses"][1:], module
    assert len(module["window"]) > 20 and not steps(module["window"]), f"pulsestream.js on npm eventsource: {module}"

    names = {name for name, _, _ in seen}
    assert names <= {"snapshot", "points", "notice"}, names
    assert all(data for _, data, _ in seen), "httpx-sse yielded an empty event"
    snapshots = [retry for name, _, retry in seen if name == "snapshot"]
    assert len(snapshots) >= 2 and all(retry == 300 for retry in snapshots), snapshots
    notices = [json.loads(data)["code"] for name, data, _ in seen if name == "notice"]
    assert "max_lifetime" in notices, notices
