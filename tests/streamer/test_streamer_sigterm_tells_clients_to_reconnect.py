"""SIGTERM drains: every SSE client is told to reconnect elsewhere, then the process exits promptly."""

from __future__ import annotations

import signal
import time

import pytest
from services import Generator, Stack
from sse import sse

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


async def test_sigterm_tells_clients_to_reconnect_and_exits(generator: Generator, stack: Stack) -> None:
    streamer = await stack.aio.streamer(generator, STREAMER_SHUTDOWN_RETRY="100ms")
    async with sse(streamer.url + "/v1/stream?series=cpu&window=1s") as reader:
        await reader.next()
        await reader.next()
        started = time.monotonic()
        streamer.signal(signal.SIGTERM)
        events = await reader.until(lambda e: e.event == "notice", timeout=10)
        assert events[-1].data["code"] == "server_shutdown"
        assert reader.retry == 100, "a short retry so browsers move on quickly"
        # The stream ends after the shutdown event.
        rest = await reader.rest()
        assert b"event: points" not in rest
    code = await streamer.aio.wait_exit(15)
    # uvicorn re-raises the signal after a clean shutdown, so the exit status is "terminated by SIGTERM".
    assert code in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 10
    text = streamer.log_text()
    assert "draining" in text
    assert "Finished server process" in text
    assert "Exception in ASGI application" not in text
