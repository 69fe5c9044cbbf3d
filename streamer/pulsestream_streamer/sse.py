"""Server-Sent Events: pure framing, and the lean per-connection writer.

Framing follows the WHATWG ``text/event-stream`` rules: ``event:``, ``id:``
and ``data:`` lines, a blank line ends an event, lines starting with ``:``
are comments (our heartbeats). Our JSON never contains a newline (orjson
without indentation), but :func:`frame` still splits multi-line data into
several ``data:`` lines so the framing is correct for any payload.

:func:`write_stream` is the whole life of one SSE response after its first
bytes: wait until the client's queue has something, send everything queued
as ONE write, repeat. Frames in the queue are shared ``bytes`` objects
(encoded once for all clients of a feed), so a flush costs each client a list
append and one ``send`` of the joined bytes, whatever the number of points.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from pulsestream_streamer.registry import Client

__all__ = [
    "HEADERS",
    "HEARTBEAT",
    "comment",
    "error_frame",
    "frame",
    "retry_frame",
    "write_stream",
]

logger = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]

#: Response headers of every stream. ``X-Accel-Buffering: no`` stops nginx from buffering;
#: no ``Content-Encoding``: compressing a stream would hold events back in the compressor.
HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

#: Sent when a stream has been idle for the heartbeat interval; keeps proxies from timing it out.
HEARTBEAT = b": heartbeat\n\n"


def frame(event: str | None, data: bytes, event_id: str | None = None) -> bytes:
    """One SSE event. ``data`` may hold newlines; each line becomes its own ``data:`` line."""
    head = b""
    if event:
        head += b"event: " + event.encode() + b"\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    return head + b"data: " + data + b"\n\n"


def retry_frame(millis: int) -> bytes:
    """The ``retry:`` field: how long a browser waits before reconnecting."""
    return b"retry: %d\n\n" % millis


def comment(text: str) -> bytes:
    """A comment line (ignored by clients)."""
    return b": " + text.replace("\n", " ").encode() + b"\n\n"


def error_frame(code: str, message: str, **extra: Any) -> bytes:
    """An ``error`` event with a JSON body ``{"code", "message", ...}``; it carries no id."""
    return frame("error", orjson.dumps({"code": code, "message": message, **extra}))


async def _watch_disconnect(receive: Receive, client: Client) -> None:
    """Wait for ``http.disconnect`` and close the client at once (prompt disconnect detection)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            client.disconnected()
            return


async def write_stream(client: Client, receive: Receive, send: Send, raw_send: Send) -> None:
    """Serve one SSE response until the client leaves or is closed.

    ``send`` (through the middleware stack) starts the response so middleware can add
    headers (CORS); the body goes through ``raw_send``, the server's own callable, which
    skips the per-message middleware wrappers and lets a stalled peer's transport be
    aborted (see :meth:`Client.abort`). Nothing sent is referenced after its write, so an
    idle connection holds no event bytes. Returns when the client is gone; never raises
    for a client-side disconnect.
    """
    loop = asyncio.get_running_loop()
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    cycle = _server_connection(raw_send, client.limits.write_buffer)
    probe: Callable[[], bool] | None = None
    watcher = None
    if cycle is None:
        watcher = asyncio.ensure_future(_watch_disconnect(receive, client))
    else:
        probe = client.probe = lambda: bool(cycle.disconnected)
        if cycle.chunked_encoding is True and _is_get(cycle):
            client.attach(cycle)
    try:
        while True:
            body = await client.next_body()
            if body is None:
                break
            client.blocked_since = loop.time()
            await raw_send({"type": "http.response.body", "body": body, "more_body": True})
            client.blocked_since = 0.0
            client.wrote(len(body), loop.time())
            body = None
            if probe is not None and probe():
                client.disconnected()
        if not client.gone:
            await raw_send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        if watcher is not None:
            watcher.cancel()
            try:
                await watcher
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise


def _is_get(cycle: Any) -> bool:
    scope = getattr(cycle, "scope", None)
    return isinstance(scope, dict) and scope.get("method") == "GET"


def _server_connection(raw_send: Send, write_buffer: int) -> Any:
    """uvicorn's connection state behind ``raw_send``, when it has what the fast paths use; else None.

    With it, a connection needs no second task waiting on ``receive()`` (about 2 KB per idle
    connection): its ``disconnected`` flag is checked after each write and by the registry
    sweep every ``sweep_interval``. Flushes may write pre-framed chunks straight to its
    transport (:meth:`Client.deliver`) while its flow control says the socket is writable.
    Without it (another server), :func:`_watch_disconnect` runs and every event goes through
    the writer.

    It also lowers the connection's transport buffer to ``write_buffer`` bytes (asyncio's
    default is 64 KiB): past it the server's ``send`` waits, so a peer that stopped reading
    shows up as a blocked writer (then a slow consumer) after a few KB instead of 64, and
    holds at most that much memory in user space.
    """
    cycle: Any = getattr(raw_send, "__self__", None)
    if not isinstance(getattr(cycle, "disconnected", None), bool):
        return None
    transport = getattr(cycle, "transport", None)
    flow = getattr(cycle, "flow", None)
    if (
        transport is None
        or not hasattr(transport, "write")
        or not isinstance(getattr(flow, "write_paused", None), bool)
    ):
        return None
    # A peer gone before the response started has a closed transport, which uvloop refuses to configure.
    if write_buffer and hasattr(transport, "set_write_buffer_limits") and not transport.is_closing():
        transport.set_write_buffer_limits(high=write_buffer)
    return cycle
