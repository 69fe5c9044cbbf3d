"""``GET /v1/stream``: one SSE connection from the parsed request to the last byte.

:class:`StreamResponse` is THE place each stream is served (tracing wraps it
here): it registers the client, joins it to its feed through the hub, runs
:func:`write_stream` and takes everything back when the stream ends.

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
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from pulsestream_streamer.access.principal import OPEN, Principal
from pulsestream_streamer.core import ladder
from pulsestream_streamer.core.request import StreamRequest
from pulsestream_streamer.core.shape import FORMATS
from pulsestream_streamer.core.sse import HEADERS
from pulsestream_streamer.fanout.clients import Client, Registry
from pulsestream_streamer.fanout.feed import Feed
from pulsestream_streamer.fanout.hub import Hub
from pulsestream_streamer.http.params import BadParameter, Forbidden, parse_stream_request
from pulsestream_streamer.http.problems import bad_parameter, problem
from pulsestream_streamer.http.uvicorn_internals import ServerConnection, aborter
from pulsestream_streamer.observability import tracing
from pulsestream_streamer.observability.metrics import StreamerMetrics

__all__ = [
    "RAW_SEND",
    "STREAM_PARAMETERS",
    "EventStream",
    "StreamResponse",
    "serve_stream",
    "stream_response",
    "write_stream",
]

logger = logging.getLogger(__name__)

#: Scope key under which the app keeps the server's own ``send`` (see :func:`write_stream`).
RAW_SEND = "pulsestream.raw_send"

Message = MutableMapping[str, Any]
RawSend = Callable[[Message], Awaitable[None]]


class EventStream(Response):
    """What ``/v1/stream`` answers, for the OpenAPI description: ``text/event-stream``."""

    media_type = "text/event-stream"


#: ``/v1/stream``'s query parameters as the OpenAPI description lists them (validated by :mod:`.params`).
STREAM_PARAMETERS: list[dict[str, Any]] = [
    {"name": name, "in": "query", "required": False, "description": text, "schema": schema}
    for name, text, schema in (
        ("series", "Comma-separated series names (default: every series).", {"type": "string"}),
        ("resolution", "raw, or a bucket width the generator serves.", {"type": "string", "default": "raw"}),
        ("window", "History in the first snapshot, a duration such as 5m.", {"type": "string"}),
        (
            "maxPoints",
            "At most this many points per series over the window (e.g. the chart's width in pixels).",
            {"type": "integer", "minimum": ladder.MIN_POINTS, "maximum": ladder.MAX_POINTS},
        ),
        ("format", "d3 (tidy rows), table, or columns.", {"type": "string", "enum": list(FORMATS), "default": "d3"}),
        ("lastEventId", "Resume cursor, for clients that cannot send the Last-Event-ID header.", {"type": "string"}),
    )
]


class StreamResponse(Response):
    """One SSE connection, start to end."""

    def __init__(self, app: FastAPI, request: StreamRequest, peer: str, key: str | None) -> None:
        super().__init__()
        self._app = app
        self._request = request
        self._peer = peer
        self._key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self._app.state
        hub: Hub = state.hub
        registry: Registry = state.registry
        metrics: StreamerMetrics = state.metrics
        raw_send = scope.get(RAW_SEND, send)
        request = self._request
        with tracing.connection_span(
            scope.get("headers", ()),
            self._peer,
            series=request.series,
            resolution=request.resolution,
            fmt=request.fmt,
            resume=request.cursor is not None or request.cursor_error is not None,
        ) as span:
            client = registry.open(self._peer, self._key)
            client.set_abort(aborter(raw_send))
            metrics.connections.inc()
            metrics.connections_total.inc()
            feed: Feed | None = None
            try:
                feed = await hub.open(client, request)
                span.joined(client.id, feed)
                await write_stream(client, receive, send, raw_send, metrics)
            finally:
                if feed is not None:
                    hub.close(client, feed)
                registry.close(client)
                metrics.connections.dec()
                if client.reason and client.reason != "disconnect":
                    metrics.drops.labels(client.reason).inc()
                span.ended(client.reason, feed, client.bytes_sent, client.events_dropped)


#: Names of a request checked against the catalogue before refreshing it (more are refused as too many anyway).
_MAX_LOOKUP = 64


def _principal(request: Request) -> Principal:
    found = request.scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else OPEN


def stream_response(app: FastAPI, request: Request) -> Response:
    """The response to a ``/v1/stream`` request: a stream, or a 400/403/503 JSON answer.

    The caller's scope is applied here, once: a stream may carry only series it may read. Expiry of the
    credential is the gate's business at this moment only; the stream, once open, is never cut for it.
    """
    hub: Hub = app.state.hub
    principal = _principal(request)
    try:
        parsed = parse_stream_request(
            request.query_params,
            request.headers.get("last-event-id"),
            hub.catalogue.current,
            app.state.settings,
            principal.allows,
        )
    except BadParameter as error:
        return bad_parameter(error.parameter, str(error))
    except Forbidden as error:
        app.state.access.refused("forbidden")
        if error.series is None:
            return problem(403, "forbidden", str(error))
        return problem(403, "forbidden", str(error), series=error.series)
    if hub.draining:
        return problem(503, "server_shutdown", "server is shutting down; retry elsewhere", {"Retry-After": "1"})
    peer = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
    key = request.scope.get("state", {}).get("client_id")
    return StreamResponse(app, parsed, peer, key if isinstance(key, str) else None)


async def serve_stream(app: FastAPI, request: Request, receive: Receive, send: Send) -> None:
    """Answer ``GET /v1/stream`` on the fast path (no routing, no per-request exit stacks)."""
    requested = request.query_params.get("series")
    if requested:  # a series published since the last catalogue refresh is not unknown
        hub: Hub = app.state.hub
        allows = _principal(request).allows
        await hub.catalogue.knows(name.strip() for name in requested.split(",")[:_MAX_LOOKUP] if allows(name.strip()))
    await stream_response(app, request)(request.scope, receive, send)


async def _watch_disconnect(receive: Receive, client: Client) -> None:
    """Wait for ``http.disconnect`` and close the client at once (prompt disconnect detection)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            client.disconnected()
            return


def _disconnect_detection(
    client: Client, receive: Receive, connection: ServerConnection | None, metrics: StreamerMetrics
) -> tuple[Callable[[], bool] | None, asyncio.Future[None] | None]:
    """How this server tells us the peer left, counted by path: a probe of uvicorn's flag, else a watcher task.

    On uvicorn a chunked GET may also take flushes written straight to its transport (``fast``).
    """
    if connection is None:
        metrics.connection_paths.labels("fallback").inc()
        return None, asyncio.ensure_future(_watch_disconnect(receive, client))
    probe = client.probe = connection.disconnected
    if connection.chunked_get:
        client.attach(connection.write_now)
        metrics.connection_paths.labels("fast").inc()
    else:
        metrics.connection_paths.labels("no_direct_writes").inc()
    return probe, None


async def _write_bodies(
    client: Client, raw_send: RawSend, probe: Callable[[], bool] | None, metrics: StreamerMetrics
) -> None:
    """Write what the client's queue gives until it gives nothing more (closed, or the peer left)."""
    loop = asyncio.get_running_loop()
    while True:
        body = await client.next_body()
        if body is None:
            return
        client.blocked_since = loop.time()
        await raw_send({"type": "http.response.body", "body": body, "more_body": True})
        client.blocked_since = 0.0
        client.wrote(len(body), loop.time())
        if client.piece_bytes:
            metrics.bytes_sent.inc(client.piece_bytes)
            client.piece_bytes = 0
        body = None
        if probe is not None and probe():
            client.disconnected()


async def write_stream(
    client: Client, receive: Receive, send: Send, raw_send: RawSend, metrics: StreamerMetrics
) -> None:
    """Serve one SSE response until the client leaves or is closed.

    ``send`` (through the middleware stack) starts the response so middleware can add
    headers (CORS); the body goes through ``raw_send``, the server's own callable, which
    skips the per-message middleware wrappers and lets a stalled peer's transport be
    aborted (see :meth:`Client.abort`). Nothing sent is referenced after its write, so an
    idle connection holds no event bytes. Returns when the client is gone; never raises
    for a client-side disconnect.

    On uvicorn (:class:`ServerConnection`) the connection's ``disconnected`` flag replaces a
    task waiting on ``receive()``, and flushes may write to it directly; on any other
    server :func:`_watch_disconnect` runs and every event goes through this writer.
    """
    connection = ServerConnection.of(raw_send, client.limits.write_buffer)
    if connection is not None and connection.http_10:
        connection.delimit_by_close()  # HTTP/1.0 has no chunked encoding: the body ends when the connection does
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    probe, watcher = _disconnect_detection(client, receive, connection, metrics)
    try:
        await _write_bodies(client, raw_send, probe, metrics)
        if not client.gone:
            if connection is not None:
                connection.ending()
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
