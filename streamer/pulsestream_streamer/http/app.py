"""The HTTP service: FastAPI routes around the hub, with a lifespan that owns every task.

Routes: ``GET /`` (dashboard), ``/static/...`` (its files), ``/client/...``
(the client module ``pulsestream.js``, its types and package files; both
through :mod:`~pulsestream_streamer.http.assets`), ``/v1/series`` (the series
the caller may read), ``/v1/stream`` (SSE, :mod:`~pulsestream_streamer.http.stream`),
``POST /v1/tokens`` (:mod:`~pulsestream_streamer.http.tokens`), ``/health``,
``/metrics``. The ``/v1`` routes live on one :class:`fastapi.APIRouter`
(``app.state.v1``) so access checks can be attached in one place.

:func:`create_app` is where the parts are made and wired together: settings
file, metrics, client registry, upstream, hub and access gate, each handed
what it needs. Bad parameters answer ``400`` with ``{"error": {"code":
"bad_parameter", "parameter": ..., "message": ...}}``; a draining server
answers new streams ``503``. SSE responses are never compressed (no GZip
middleware here, and the stream sets no ``Content-Encoding``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from pulsestream.settingsfile import SettingsFile
from pulsestream_streamer import __version__
from pulsestream_streamer.access.clientid import ClientIdentifier, parse_networks
from pulsestream_streamer.access.gate import AccessGate, AccessMiddleware
from pulsestream_streamer.access.idp import IdpTokens
from pulsestream_streamer.access.jwks import JwksSource
from pulsestream_streamer.access.keys import KeyStore, parse_keys
from pulsestream_streamer.access.principal import OPEN, Principal
from pulsestream_streamer.access.ratelimit import RateLimiter
from pulsestream_streamer.access.tokens import Tokens, TokenSecrets
from pulsestream_streamer.fanout.clients import ClientLimits, Registry
from pulsestream_streamer.fanout.hub import Hub
from pulsestream_streamer.http.assets import Assets
from pulsestream_streamer.http.params import BadParameter
from pulsestream_streamer.http.problems import bad_parameter, problem
from pulsestream_streamer.http.stream import RAW_SEND, STREAM_PARAMETERS, EventStream, serve_stream, stream_response
from pulsestream_streamer.http.tokens import TOKEN_REQUEST_SCHEMA, mint_token
from pulsestream_streamer.observability.metrics import CONTENT_TYPE_LATEST, StreamerMetrics
from pulsestream_streamer.settings import StreamerSettings
from pulsestream_streamer.upstream.channels import Upstream

__all__ = ["StreamerApp", "create_app"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent.parent / "static"
#: The client module's folder, laid out as the npm package it can be published as.
CLIENT_DIR = STATIC_DIR / "client"

#: Path of the SSE route, served by :class:`StreamerApp`'s fast path.
STREAM_PATH = "/v1/stream"


class StreamerApp(FastAPI):
    """FastAPI with a lean path for ``GET /v1/stream``, the one route that lives for hours.

    An SSE connection keeps every frame of the stack that serves it alive for its whole
    life. Through FastAPI's routing that is about 12 KB per connection (exit stacks,
    exception wrappers, request objects), a third of an idle connection's memory. So
    ``GET /v1/stream`` goes through the app's user middleware (access gate, CORS,
    anything added later, in the same order) straight to :func:`serve_stream`. The
    route is still declared on the ``/v1`` router (OpenAPI, and the fallback): if
    dependencies are attached to that router or route, the fast path turns itself off
    and FastAPI serves the stream, so nothing attached there is ever bypassed.

    It also keeps the server's own ``send`` in the scope (:data:`RAW_SEND`) for the
    SSE body writes (see :func:`~pulsestream_streamer.http.stream.write_stream`).
    """

    _stream_stack: ASGIApp | None = None
    _stream_checked = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send
            if scope["path"] == STREAM_PATH and scope["method"] == "GET":
                stack = self._stream_stack if self._stream_checked else self._build_stream_stack()
                if stack is not None:
                    scope["app"] = self
                    await stack(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    def _build_stream_stack(self) -> ASGIApp | None:
        self._stream_checked = True
        v1: APIRouter | None = getattr(self.state, "v1", None)
        routes = [r for r in (v1.routes if v1 else []) if isinstance(r, APIRoute) and r.path == STREAM_PATH]
        if v1 is None or v1.dependencies or self.router.dependencies or any(r.dependencies for r in routes):
            logger.info("stream fast path off: dependencies are attached to the /v1 routes")
            return None

        async def lean(scope: Scope, receive: Receive, send: Send) -> None:
            await serve_stream(self, Request(scope, receive), receive, send)

        stack: ASGIApp = lean
        for middleware in reversed(self.user_middleware):
            stack = middleware.cls(stack, *middleware.args, **middleware.kwargs)
        self._stream_stack = stack
        return stack


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, with a refused preflight answered in our JSON error shape (not text/plain)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}
        message = bytes(response.body).decode("latin-1").replace("Disallowed CORS", "CORS preflight refused:", 1)
        return problem(400, "cors_refused", message + " (see STREAMER_CORS_ALLOWED_ORIGINS)", headers)


class PrometheusText(Response):
    """What ``/metrics`` answers, for the OpenAPI description: Prometheus' text format."""

    media_type = CONTENT_TYPE_LATEST


#: Codes of the HTTP errors Starlette raises itself (unknown path, method, static file), by status.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def build_gate(settings: StreamerSettings, settings_file: SettingsFile, metrics: StreamerMetrics) -> AccessGate:
    """The access gate for ``settings``, following ``settings_file``'s live rate limits.

    Says at start-up if ``/v1`` is open; counts refusals in ``metrics``.
    """
    keys = KeyStore(
        parse_keys(settings.api_keys, ","),
        settings.api_keys_file or None,
        poll_interval=settings.settings_poll_interval.seconds,
    )
    leeway = settings.token_leeway.seconds
    secrets = TokenSecrets(settings.token_secret_file or None, settings.token_previous_secret_file or None)
    idp = None
    if settings.jwt_jwks_url:
        jwks = JwksSource(
            settings.jwt_jwks_url,
            refresh=settings.jwt_jwks_refresh.seconds,
            ca_file=settings.jwt_jwks_ca_file or None,
        )
        idp = IdpTokens(
            jwks, settings.jwt_issuer, settings.jwt_audience, series_claim=settings.jwt_series_claim, leeway=leeway
        )
    gate = AccessGate(
        keys,
        ClientIdentifier(parse_networks(settings.trusted_proxies)),
        RateLimiter(settings_file.current.rate_limit),
        lambda: settings_file.current.rate_limit,
        tokens=Tokens(secrets, leeway),
        idp=idp,
        protect_health_and_metrics=settings.protect_health_and_metrics,
        on_refused=lambda reason: metrics.requests_refused.labels(reason).inc(),
    )
    if idp is None:
        keys.log_mode()
    else:
        logger.info("identity-provider JWTs accepted", extra={"jwks": idp.jwks.state()["source"], "keys": keys.count})
    if not secrets.configured and not gate.auth.open:
        logger.info("token secret not configured: tokens minted here are accepted by this process only")
    return gate


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
        write_buffer=settings.client_write_buffer,
    )
    registry = Registry(limits)
    metrics.track_queue_fill(lambda: max((client.queued for client in registry), default=0) / max(1, limits.max_events))
    upstream = Upstream(settings)
    hub = Hub(settings, upstream, registry, metrics, spec)
    gate = build_gate(settings, settings_file, metrics)

    # FastAPI's own request spans are off: the streamer traces the SSE connection itself (observability.tracing),
    # with links to the upstream it reads from, and /health and /metrics probes stay out of traces.
    app = StreamerApp(
        title="pulsestream streamer",
        version=__version__,
        lifespan=_lifespan(settings, settings_file, hub, upstream, gate),
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
            JsonCORSMiddleware,
            allow_origins=list(settings.cors_allowed_origins),
            allow_methods=["GET", "POST"],  # POST: /v1/tokens
            allow_headers=["Authorization", "X-API-Key", "Last-Event-ID", "Content-Type"],
            allow_credentials=settings.cors_allow_credentials,
        )
    _add_error_handlers(app)
    _add_routes(app, hub, upstream, settings_file, metrics)
    return app


def principal_of(request: Request) -> Principal:
    """The caller as the access gate saw it (open when the gate did not run: paths it does not guard)."""
    found = request.scope.get("state", {}).get("principal")
    return found if isinstance(found, Principal) else OPEN


Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]


def _lifespan(
    settings: StreamerSettings, settings_file: SettingsFile, hub: Hub, upstream: Upstream, gate: AccessGate
) -> Lifespan:
    """Start the hub, the settings watcher (and the JWKS refresh) with the app; on shutdown drain, cancel, await."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def watch_settings() -> None:
            async for new in settings_file.changes():
                hub.apply(new)

        tasks = [
            asyncio.create_task(hub.run(), name="hub"),
            asyncio.create_task(watch_settings(), name="settings-watch"),
        ]
        if gate.idp is not None:
            tasks.append(asyncio.create_task(gate.idp.jwks.run(), name="jwks-refresh"))
        for task in tasks:
            task.add_done_callback(_report_crash)
        app.state.background = tasks  # /health reports a task that stopped: the service is then failed
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

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answer in one JSON shape: ``{"error": {"code", "message", ...}}`` (FastAPI's is ``detail``)."""

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "http_error")
        message = f"no route {request.url.path}" if error.status_code == 404 else str(error.detail)
        return problem(error.status_code, code, message, dict(error.headers or {}))

    @app.exception_handler(BadParameter)
    async def _bad(request: Request, error: BadParameter) -> JSONResponse:
        return bad_parameter(error.parameter, str(error))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        location = first.get("loc", ())
        return bad_parameter(str(location[-1]) if location else "request", str(first.get("msg", "invalid request")))


def _add_routes(
    app: FastAPI, hub: Hub, upstream: Upstream, settings_file: SettingsFile, metrics: StreamerMetrics
) -> None:
    v1 = APIRouter(prefix="/v1")

    @v1.get("/series")
    async def series(request: Request) -> list[dict[str, Any]]:
        # A JSON list, as the HTTP contract says; the catalogue-wide facts ride along on each entry.
        # Only the series the caller may read: a scoped key never learns the names of the others.
        principal = principal_of(request)
        catalogue = await hub.catalogue.refresh()
        shared = {
            "resolutions": list(catalogue.resolutions),
            "frequencyMs": catalogue.frequency_ms,
            "retentionMs": catalogue.retention_ms,
            "source": "generator" if catalogue.known else "settings",
        }
        return [info.to_json() | shared for info in catalogue.series.values() if principal.allows(info.name)]

    @v1.post("/tokens", status_code=201, openapi_extra=TOKEN_REQUEST_SCHEMA)
    async def tokens(request: Request) -> JSONResponse:
        return await mint_token(request, app.state.access, app.state.settings)

    @v1.get(
        "/stream",
        response_model=None,
        response_class=EventStream,
        responses={200: {"description": "Server-Sent Events: snapshot, points, heartbeats (see the README)."}},
        openapi_extra={"parameters": STREAM_PARAMETERS},
    )
    async def stream(request: Request) -> Response:
        # Normally not reached: StreamerApp serves this path itself (see its docstring).
        return stream_response(app, request)

    app.include_router(v1)
    app.state.v1 = v1

    @app.get("/health")
    async def health() -> JSONResponse:
        stopped = [task.get_name() for task in getattr(app.state, "background", ()) if task.done()]
        body = health_body(hub, upstream, settings_file, stopped) | access_health(app.state.access)
        return JSONResponse(body, status_code=503 if hub.draining or stopped else 200)

    @app.get("/metrics", response_class=PrometheusText)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    static, client = Assets(STATIC_DIR), Assets(CLIENT_DIR)

    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> Response:
        response = await static.response(request, "index.html")
        return problem(404, "not_found", "dashboard not installed") if response.status_code == 404 else response

    @app.get("/static/{path:path}", include_in_schema=False)
    async def static_file(request: Request, path: str) -> Response:
        return await static.response(request, path)

    @app.get("/client/{path:path}", include_in_schema=False)
    async def client_file(request: Request, path: str) -> Response:
        return await client.response(request, path)


def health_body(hub: Hub, upstream: Upstream, settings_file: SettingsFile, stopped: list[str]) -> dict[str, Any]:
    """The ``/health`` document: overall status, upstream state and details, connections, versions."""
    state = upstream.state()
    topics = list(hub.topics.values())
    up = sum(1 for topic in topics if topic.up)
    if hub.draining:
        status = "draining"
    elif stopped:
        status = "failed"  # the hub or the settings watcher died: nothing flows; let the probe restart us
    elif state == "ready" or (topics and up == len(topics)):
        status = "ok"
    else:
        status = "degraded"
    body: dict[str, Any] = {
        "status": status,
        # The gRPC connection state, as the HTTP contract says ("ready", "connecting", "transient_failure",
        # "idle", "shutdown"); the details beside it.
        "upstream": state,
        "upstream_detail": {
            "address": upstream.address,
            "addresses": upstream.addresses,
            "streams": up,
            "topics": len(topics),
            "error": upstream.last_error,
        },
        "connections": len(hub.registry),
        "version": __version__,
        "config_version": settings_file.version,
        "settings_error": settings_file.error,
    }
    if stopped:
        body["stopped_tasks"] = stopped
    return body


def access_health(gate: AccessGate) -> dict[str, Any]:
    """What ``/health`` says of access, never a secret: the token secret's source and error, the JWKS state."""
    secrets = gate.tokens.secrets
    body: dict[str, Any] = {"tokens": {"secret": "file" if secrets.configured else "ephemeral", "error": secrets.error}}
    if gate.idp is not None:
        body["jwks"] = gate.idp.jwks.state()
    return body


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s stopped: %r", task.get_name(), task.exception(), exc_info=task.exception())
