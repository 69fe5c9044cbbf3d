"""Clients nobody here wrote, and the Python client, with tokens only in URLs (issue 17).

One real generator and streamer with an API key holding a ``+`` and ``/``, tokens that live 3 s and streams
that end every 2 s (``max_lifetime``), so every client reconnects many times past its token's expiry:

- npm ``eventsource`` (WhatWG EventSource for Node) with ``?access_token=``: a bare one with a token minted once
  (long-lived enough), and ``pulsestream.js`` with ``tokenFromKey`` on the same class, fresh tokens each time;
- ``pulsestream.client.Stream`` with ``TokenFromKey``.

Each keeps a contiguous window (no gap, no duplicate) across the reconnects, and the key never travels in a URL.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from client_stack import API_KEY, Stack, running, steps

from pulsestream.client import Point, Refused, Stream, TokenFromKey

WATCHER = Path(__file__).parent / "node" / "watch_tokens.mjs"
EVENTSOURCE = "eventsource@4"  # WhatWG EventSource for Node 20 (v5 needs Node 22)
TOKENS = {"STREAMER_TOKEN_TTL": "3s", "STREAMER_TOKEN_LEEWAY": "0s", "STREAMER_CLIENT_MAX_LIFETIME": "2s"}


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


async def follow_with_python(stack: Stack, until: asyncio.Event) -> tuple[list[Point], TokenFromKey, Stream]:
    token = TokenFromKey(stack.base, API_KEY, series=["cpu"])
    points: list[Point] = []
    async with Stream(stack.base, series=["cpu"], window="10s", token=token) as stream:
        async for point in stream:
            points.append(point)
            if until.is_set() and stream.connections >= 4:
                break
    return points, token, stream


async def test_eventsource_pulsestream_js_and_the_python_client_stream_with_tokens_only(
    node_modules: Path, tmp_path: Path
) -> None:
    with running(tmp_path, **TOKENS) as stack:
        await stack.start()
        process = await asyncio.create_subprocess_exec(
            "node", str(WATCHER), stack.base, API_KEY, str(node_modules),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        lines: list[dict[str, Any]] = []

        async def read() -> None:
            assert process.stdout is not None
            async for raw in process.stdout:
                lines.append(json.loads(raw))

        reading = asyncio.create_task(read())
        enough = asyncio.Event()
        python = asyncio.create_task(follow_with_python(stack, enough))
        try:
            async with asyncio.timeout(40):
                # Long enough for several 2 s streams and 3 s tokens: the module reconnects past expiry.
                while sum(1 for line in lines if line["kind"] == "status" and line["status"] == "live") < 4:
                    assert process.returncode is None, lines
                    await asyncio.sleep(0.1)
            enough.set()
            points, token, stream = await asyncio.wait_for(python, 30)
            assert process.stdin is not None
            process.stdin.write(b"end\n")
            await process.stdin.drain()
            await asyncio.wait_for(process.wait(), 10)
            await reading
        finally:
            if process.returncode is None:
                process.kill()
            python.cancel()
        logs = stack.logs()

    assert lines[0] == {"kind": "minted", "status": 201}
    summary = next(line for line in lines if line["kind"] == "summary")
    # The bare EventSource (its own reconnects, Last-Event-ID) with a token in its URL.
    assert [line for line in lines if line["kind"] == "snapshot"], "the bare EventSource streamed"
    assert len(summary["seqs"]) > 20 and not steps(sorted(set(summary["seqs"])))
    module = summary["module"]
    assert module["reconnects"] >= 3 and module["tokens"] >= 2, module
    assert len(module["window"]) > 20 and not steps(module["window"]), module
    assert "access_token=…" in module["url"] and "api_key" not in module["url"]
    assert not [line for line in lines if line["kind"] == "module-error" and line["status"] in (401, 403)], lines
    # The Python client: each point once, in order, across reconnects past its tokens' expiry.
    seqs = [point.seq for point in points]
    assert stream.connections >= 4 and token.minted >= 2, (stream.connections, token.minted)
    assert len(seqs) > 20 and not steps(seqs), steps(seqs)[:5]
    assert API_KEY not in logs


async def test_the_python_client_s_token_from_a_wrong_key_is_refused(tmp_path: Path) -> None:
    with running(tmp_path) as stack:
        await stack.start()
        with pytest.raises(Refused) as refused:
            await TokenFromKey(stack.base, "not-the-key")()
        assert refused.value.status == 401 and refused.value.code == "unauthorized"
        with pytest.raises(Refused) as wider:
            await TokenFromKey(stack.base, API_KEY, series=["cpu?"])()
        assert wider.value.status == 400
