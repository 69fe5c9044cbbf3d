"""SIGTERM drains: every SSE client is told to reconnect elsewhere, then the process exits promptly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
from loopback import free_port, wait_until
from streamer_harness import BIN, Generator, sse


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([str(BIN / "pulsestream-streamer")], env=env, stdout=out, stderr=out)


async def test_sigterm_tells_clients_to_reconnect_and_exits(generator: Generator, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "STREAMER_PORT": str(port),
        "STREAMER_GENERATOR_ADDRESS": generator.address,
        "STREAMER_SHUTDOWN_RETRY": "100ms",
        "LOG_LEVEL": "info",
    }
    log = tmp_path / "streamer.log"
    proc = _start(env, log)
    url = f"http://127.0.0.1:{port}"
    try:

        async def healthy() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(url + "/health")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(healthy, timeout=30, what="streamer /health")
        async with sse(url + "/v1/stream?series=cpu&window=1s") as reader:
            await reader.next()
            await reader.next()
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            events = await reader.until(lambda e: e.event == "notice", timeout=10)
            assert events[-1].data["code"] == "server_shutdown"
            assert reader.retry == 100, "a short retry so browsers move on quickly"
            # The stream ends after the shutdown event.
            rest = await reader.rest()
            assert b"event: points" not in rest
        code = await asyncio.to_thread(proc.wait, 15)
        # uvicorn re-raises the signal after a clean shutdown, so the exit status is "terminated by SIGTERM".
        assert code in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "draining" in text
    assert "Finished server process" in text
    assert "Exception in ASGI application" not in text
