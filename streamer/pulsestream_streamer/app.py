"""The HTTP service: FastAPI routes around the hub, with a lifespan that owns every task.

Routes: ``GET /`` (dashboard), ``/static`` (its files), ``/v1/series``,
``/v1/stream`` (SSE), ``/health``, ``/metrics``. The ``/v1`` routes live on
one :class:`fastapi.APIRouter` (``app.state.v1``) so access checks can be
attached in one place.

Bad parameters answer ``400`` with ``{"error": {"code": "bad_parameter",
"parameter": ..., "message": ...}}``; a draining server answers new streams
``503``. SSE responses are never compressed (no GZip middleware here, and
the stream sets no ``Content-Encoding``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from pulsestream.settingsfile import SettingsFile
from pulsestream_streamer import __version__, sse, tracing
from pulsestream_streamer.access import AccessMiddleware, build_gate
from pulsestream_streamer.hub import Feed, Hub, StreamRequest
from pulsestream_streamer.metrics import CONTENT_TYPE_LATEST, StreamerMetrics
from pulsestream_streamer.params import BadParameter, parse_stream_request
from pulsestream_streamer.registry import ClientLimits, Registry
from pulsestream_streamer.settings import StreamerSettings
from pulsestream_streamer.upstream import Upstream

__all__ = ["RAW_SEND", "StreamerApp", "create_app"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"

#: Scope key under which :class:`StreamerApp` keeps the server's own ``send`` (see :func:`sse.write_stream`).
RAW_SEND = "pulsestream.raw_send"


class StreamerApp(FastAPI):
    """FastAPI that remembers the server's ``send`` for the SSE body fast path."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)


def _bad_parameter(parameter: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "bad_parameter", "parameter": parameter, "message": message}}, status_code=400
    )


def _aborter(raw_send: Callable[..., Awaitable[None]]) -> Callable[[], None] | None:
    """A way to cut a connection whose peer stopped reading (uvicorn's transport), if the server exposes it."""
    cycle = getattr(raw_send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    abort = getattr(transport, "abort", None)
    return abort if callable(abort) else None


class StreamResponse(Response):
    """One SSE connection, start to end: THE place each stream is served (tracing wraps it here)."""

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
            client.set_abort(_aborter(raw_send))
            metrics.connections.inc()
            metrics.connections_total.inc()
            feed: Feed | None = None
            try:
                first = await hub.open(client, request)
                feed = client.feed if isinstance(client.feed, Feed) else None
                span.joined(client.id, feed)
                await sse.write_stream(client, receive, send, raw_send, first)
            finally:
                hub.close(client)
                registry.close(client)
                metrics.connections.dec()
                if client.reason and client.reason != "disconnect":
                    metrics.drops.labels(client.reason).inc()
                span.ended(client.reason, feed, client.bytes_sent, client.events_dropped)


def create_app(settings: StreamerSettings) -> StreamerApp:
    """Build the app; the lifespan starts the hub and the settings watcher and stops them."""
    settings_file = SettingsFile(
        settings.settings_file or None, settings.settings_poll_interval.seconds, base=settings.base_spec()
    )
    spec = settings_file.current
    metrics = StreamerMetrics()
    limits = ClientLimits(
        max_events=spec.buffer_size,
        max_bytes=settings.client_max_queue_bytes,
        heartbeat=spec.heartbeat_interval.seconds,
        stall_timeout=settings.client_stall_timeout.seconds,
        max_lifetime=settings.client_max_lifetime.seconds,
    )
    registry = Registry(limits)
    metrics.track_queue_fill(lambda: max((client.queued for client in registry), default=0) / max(1, limits.max_events))
    upstream = Upstream(settings)
    hub = Hub(settings, upstream, registry, metrics, spec)
    gate = build_gate(settings, settings_file, metrics.registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def watch_settings() -> None:
            async for new in settings_file.changes():
                hub.apply(new)

        tasks = [
            asyncio.create_task(hub.run(), name="hub"),
            asyncio.create_task(watch_settings(), name="settings-watch"),
        ]
        for task in tasks:
            task.add_done_callback(_report_crash)
        logger.info(
            "streamer ready",
            extra={"generator": ",".join(settings.generator_address), "config_version": settings_file.version},
        )
        try:
            yield
        finally:
            hub.drain()
            for task in tasks:
                task.cancel()
            # Children's CancelledError comes back as a result; our own cancellation still propagates.
            await asyncio.gather(*tasks, return_exceptions=True)
            await upstream.close()

    # FastAPI's own request spans are off: the streamer traces the SSE connection itself (tracing.py),
    # with links to the upstream it reads from, and /health and /metrics probes stay out of traces.
    app = StreamerApp(
        title="pulsestream streamer",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        telemetry={"tracing": False},
    )
    app.state.settings = settings
    app.state.settings_file = settings_file
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.upstream = upstream
    app.state.hub = hub

    app.state.access = gate
    app.add_middleware(AccessMiddleware, gate=gate)  # before CORS, so CORS wraps it and refusals carry its headers
    if settings.cors_allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allowed_origins),
            allow_methods=["GET"],
            allow_headers=["Authorization", "X-API-Key", "Last-Event-ID"],
            allow_credentials=settings.cors_allow_credentials,
        )

    @app.exception_handler(BadParameter)
    async def _bad(request: Request, error: BadParameter) -> JSONResponse:
        return _bad_parameter(error.parameter, str(error))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        location = first.get("loc", ())
        return _bad_parameter(str(location[-1]) if location else "request", str(first.get("msg", "invalid request")))

    v1 = APIRouter(prefix="/v1")

    @v1.get("/series")
    async def series() -> dict[str, Any]:
        catalogue = await hub.refresh_catalogue()
        return {
            "series": [info.to_json() for info in catalogue.series.values()],
            "resolutions": list(catalogue.resolutions),
            "frequencyMs": catalogue.frequency_ms,
            "retentionMs": catalogue.retention_ms,
            "source": "generator" if catalogue.known else "settings",
        }

    @v1.get("/stream", response_model=None)
    async def stream(request: Request) -> Response:
        parsed = parse_stream_request(
            request.query_params, request.headers.get("last-event-id"), hub.catalogue, settings
        )
        if hub.draining:
            return JSONResponse(
                {"error": {"code": "server_shutdown", "message": "server is shutting down; retry elsewhere"}},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        peer = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
        key = getattr(request.state, "client_id", None)
        return StreamResponse(app, parsed, peer, key if isinstance(key, str) else None)

    app.include_router(v1)
    app.state.v1 = v1

    @app.get("/health")
    async def health() -> JSONResponse:
        state = upstream.state()
        topics = list(hub.topics.values())
        up = sum(1 for topic in topics if topic.up)
        if hub.draining:
            status = "draining"
        elif state == "ready" or (topics and up == len(topics)):
            status = "ok"
        else:
            status = "degraded"
        body = {
            "status": status,
            "upstream": {
                "state": state,
                "address": upstream.address,
                "addresses": upstream.addresses,
                "streams": up,
                "topics": len(topics),
                "error": upstream.last_error,
            },
            "connections": len(registry),
            "version": __version__,
            "config_version": settings_file.version,
            "settings_error": settings_file.error,
        }
        return JSONResponse(body, status_code=503 if hub.draining else 200)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            return JSONResponse({"error": {"code": "not_found", "message": "dashboard not installed"}}, 404)
        return FileResponse(page, media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    return app


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s stopped: %r", task.get_name(), task.exception(), exc_info=task.exception())
