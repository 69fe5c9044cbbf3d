"""The SSE fast paths engage on the uvicorn we ship with: a silent fallback would cost memory and CPU, not tests.

``http/uvicorn_internals.py`` reads uvicorn's connection objects, which are not
public API. If a uvicorn release renames what it reads, every stream still
works, through the ASGI fallback (a disconnect-watcher task per connection,
every event through the queue); nothing else would fail. This test does.
"""

from __future__ import annotations

import uvicorn
from loopback import wait_until
from pulsestream_streamer.http.uvicorn_internals import ServerConnection
from services import Streamer
from sse import sse


async def test_streams_on_uvicorn_take_the_fast_path(streamer: Streamer) -> None:
    async with sse(streamer.url + "/v1/stream?series=cpu&window=1s") as reader:
        await reader.next()  # the snapshot
        await reader.next()  # a points event, written by a flush
        clients = list(streamer.state.registry)
        assert len(clients) == 1
        assert clients[0].writes_directly, f"uvicorn {uvicorn.__version__}: flushes no longer write directly"
    fast = await streamer.metric("pulsestream_streamer_sse_connections_by_path_total", {"path": "fast"})
    fallback = await streamer.metric("pulsestream_streamer_sse_connections_by_path_total", {"path": "fallback"})
    assert (fast, fallback) == (1, 0), f"uvicorn {uvicorn.__version__}: the stream fell back to plain ASGI"


async def test_anything_but_uvicorns_connection_is_refused() -> None:
    async def send(message: object) -> None:
        return None

    assert ServerConnection.of(send, 16384) is None


async def test_the_fast_path_disconnect_probe_sees_a_client_leave(streamer: Streamer) -> None:
    async with sse(streamer.url + "/v1/stream?series=cpu&window=1s") as reader:
        await reader.next()
    # No receive() watcher runs on the fast path: the sweep's probe of uvicorn's flag must notice.
    await wait_until(lambda: len(streamer.state.registry) == 0, what="the disconnect to be seen")
