"""The generator app: gRPC server, producer, settings watcher and metrics, with one lifecycle.

Start-up: backfill the history ring, bind the port, start the server, the
producer, the published-bucket closer, the ingest intake and the settings
watcher, open /metrics, then report SERVING for ``""``,
``pulsestream.v1.TimeSeriesService`` and ``pulsestream.v1.IngestService``.
With ``GENERATOR_HISTORY_URL`` the shared history's follower starts too, and
serving waits for its first sync (or for Redis found down); the ingest
service's health then follows Redis (NOT_SERVING while it is unreachable),
while ``""`` and the TimeSeriesService stay SERVING: streams are served from
the local mirror either way.

Shutdown (SIGTERM/SIGINT, or leaving ``async with``), each step logged:

1. health goes NOT_SERVING (``enter_graceful_shutdown``), so probes and
   balancers stop sending new calls here;
2. new streams and ingest batches are refused with UNAVAILABLE (batches
   still queued are answered UNAVAILABLE unstored, so producers resend them);
3. streams in flight are ended with UNAVAILABLE "server draining, reconnect"
   (the message carries the ``after_sequence`` to resume with), and shutdown
   waits until they are gone, at most ``GENERATOR_GRACE_PERIOD``;
4. ``server.stop(grace)`` with what is left of the grace period (at most
   1 s: only unary calls and health watches remain), which cancels
   whatever is still running;
5. the producer, the bucket closer, the intake and the settings watcher are
   cancelled and awaited, and the metrics endpoint is closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

from pulsestream.settingsfile import SettingsFile
from pulsestream.v1 import ingest_pb2_grpc, random_pb2, random_pb2_grpc, timeseries_pb2_grpc
from pulsestream_generator import auth, redisclient, reflection
from pulsestream_generator.clock import now_ms
from pulsestream_generator.decoding import add_servicer
from pulsestream_generator.gate import Gate
from pulsestream_generator.hub import Hub
from pulsestream_generator.ingestion import (
    INGEST_SERVICE_NAME,
    OTLP_METRICS_SERVICE_NAME,
    Ingest,
    IngestServicer,
    MetricsServicer,
)
from pulsestream_generator.journal import Journal
from pulsestream_generator.metrics import GeneratorMetrics
from pulsestream_generator.publishedstore import PublishedStore, Sealed, Stored
from pulsestream_generator.randomness import RandomServicer
from pulsestream_generator.redislayout import Layout
from pulsestream_generator.redisstore import BLOCK_MS, RedisStore
from pulsestream_generator.settings import GeneratorSettings
from pulsestream_generator.source import Source
from pulsestream_generator.timeseries import SERVICE_NAME, TimeSeriesServicer

logger = logging.getLogger(__name__)

RANDOM_SERVICE_NAME = random_pb2.DESCRIPTOR.services_by_name["RandomService"].full_name
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
#: What is left of the grace period after streams have drained is used for unary calls, up to this.
FINAL_STOP_GRACE_S = 1.0


class StartupError(RuntimeError):
    """The generator cannot start as configured; ``str()`` is one line naming the setting to change."""


def _check_free(host: str, port: int, setting: str) -> None:
    """Refuse a port another process listens on, before gRPC (quietly, with ``SO_REUSEPORT`` off) would."""
    if not port:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as error:
            hint = ", or 0 to turn /metrics off" if setting == "GENERATOR_METRICS_PORT" else ""
            raise StartupError(
                f"{setting}={port}: {host}:{port} is in use ({error.strerror or error}); "
                f"another generator may be running there: stop it or choose another port{hint}"
            ) from error


def server_options(settings: GeneratorSettings) -> list[tuple[str, Any]]:
    """gRPC core channel arguments from the settings (keepalive, connection age, stream limits)."""
    options: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", settings.keepalive_time.millis),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout.millis),
        # grpcio 1.85 waits for a ping's ack up to http2.ping_timeout_ms (default 1 min), not keepalive_timeout:
        # without this a frozen subscriber would hold its stream (and its buffer) for a minute.
        ("grpc.http2.ping_timeout_ms", settings.keepalive_timeout.millis),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", settings.keepalive_min_client_interval.millis),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        # gRPC turns SO_REUSEPORT on by default: a second generator on a taken port would then start,
        # say "serving" and silently split the clients with the first. Off, the bind fails.
        ("grpc.so_reuseport", 0),
        # Only ingest requests are large (a Publish batch, an OTLP export); gRPC refuses a larger one itself.
        ("grpc.max_receive_message_length", settings.ingest_max_message_size),
    ]
    if settings.max_connection_age.millis:
        options += [
            ("grpc.max_connection_age_ms", settings.max_connection_age.millis),
            ("grpc.max_connection_age_grace_ms", settings.max_connection_age_grace.millis),
        ]
    return options


def build_server(settings: GeneratorSettings, interceptors: tuple[Any, ...] = ()) -> grpc.aio.Server:
    """The one place the gRPC server object is made (server interceptors go here)."""
    return grpc.aio.server(options=server_options(settings), interceptors=interceptors)


def server_credentials(settings: GeneratorSettings) -> grpc.ServerCredentials | None:
    """TLS credentials when a certificate and key are configured, else ``None`` (plaintext).

    With ``GENERATOR_TLS_CLIENT_CA_FILE`` every connection must present a client certificate that CA
    signed (mutual TLS), whatever the RPC: the TLS handshake fails before any call otherwise.
    """
    if not settings.tls_cert_file:
        return None
    key = Path(settings.tls_key_file).read_bytes()
    chain = Path(settings.tls_cert_file).read_bytes()
    if not settings.tls_client_ca_file:
        return grpc.ssl_server_credentials([(key, chain)])
    client_ca = Path(settings.tls_client_ca_file).read_bytes()
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca, require_client_auth=True)


class GeneratorApp:
    """Everything the generator runs, started and stopped together (``async with``)."""

    def __init__(self, settings: GeneratorSettings, settings_file: SettingsFile | None = None) -> None:
        self.settings = settings
        self.settings_file = settings_file or SettingsFile(
            settings.settings_file or None,
            poll_interval=settings.settings_poll_interval.seconds,
            base=settings.base_spec(),
        )
        self.metrics = GeneratorMetrics()
        self.source = Source(settings.seed)
        self.shared: RedisStore | None = None
        self.hub = Hub(
            self.source,
            self.settings_file.current,
            self.metrics,
            close_delay_ms=settings.ingest_close_delay.millis,
            journal=Journal(Path(settings.ingest_journal_dir))
            if settings.ingest_journal_dir and not settings.history_url
            else None,
            store=self._shared_history if settings.history_url else None,
        )
        self.ingest = Ingest(self.hub, settings, self.metrics)
        self.gate = Gate()
        self.health = health_aio.HealthServicer()
        self.server = build_server(settings)
        add_servicer(
            self.server,
            timeseries_pb2_grpc.add_TimeSeriesServiceServicer_to_server,
            TimeSeriesServicer(self.hub, self.gate, self.metrics),
        )
        add_servicer(
            self.server, random_pb2_grpc.add_RandomServiceServicer_to_server, RandomServicer(self.gate, self.metrics)
        )
        add_servicer(self.server, ingest_pb2_grpc.add_IngestServiceServicer_to_server, IngestServicer(self.ingest))
        add_servicer(
            self.server, metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server, MetricsServicer(self.ingest)
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable(
            (SERVICE_NAME, INGEST_SERVICE_NAME, OTLP_METRICS_SERVICE_NAME, RANDOM_SERVICE_NAME, HEALTH_SERVICE_NAME),
            self.server,
        )
        self.port = 0
        self.metrics_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    def _shared_history(self, on_stored: Stored, on_sealed: Sealed) -> PublishedStore:
        """The Redis-backed store (``GENERATOR_HISTORY_URL``), following what the hub's settings say now."""
        self.shared = RedisStore(
            redisclient.connect(self.settings),
            Layout(self.settings.history_key_prefix),
            on_stored,
            on_sealed,
            self.metrics.history(),
            synthetic=lambda: self.hub.spec.series,
            span_ms=lambda: self.hub.span_ms,
            block_ms=min(BLOCK_MS, self.settings.history_timeout.millis // 2),
        )
        return self.shared

    async def _report_history(self, shared: RedisStore) -> None:
        """Ingest health follows the shared history: NOT_SERVING while Redis is unreachable."""
        async for up in shared.states():
            status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
            await self.health.set(INGEST_SERVICE_NAME, status)

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> None:
        """Backfill, bind, serve, start the background tasks, then report SERVING."""
        # Ports first: a taken one is a one-line error before any work is done or logged.
        _check_free(self.settings.host, self.settings.port, "GENERATOR_PORT")
        _check_free(self.settings.host, self.settings.metrics_port, "GENERATOR_METRICS_PORT")
        secrets = list(self.settings.ingest_tokens)
        if self.shared is not None:
            password = redisclient.password_of(self.settings)
            secrets += [password] if password else []
        auth.install_redactor(secrets)
        if self.shared is not None and self.settings.ingest_journal_dir:
            logger.warning(
                "GENERATOR_INGEST_JOURNAL_DIR is not used with GENERATOR_HISTORY_URL: the shared history (Redis, "
                "with its own persistence) keeps the published points"
            )
        self.hub.recover(now_ms())
        self.hub.backfill(now_ms())
        bind = f"{self.settings.host}:{self.settings.port}"
        credentials = server_credentials(self.settings)
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(bind)
            else:
                self.port = self.server.add_secure_port(bind, credentials)
        except RuntimeError as error:
            raise StartupError(
                f"GENERATOR_PORT={self.settings.port}: cannot listen on {bind}; choose another port"
            ) from error
        try:
            self.metrics_port = self.metrics.serve(self.settings.host, self.settings.metrics_port)
        except OSError as error:
            raise StartupError(
                f"GENERATOR_METRICS_PORT={self.settings.metrics_port}: cannot listen on "
                f"{self.settings.host}:{self.settings.metrics_port} ({error.strerror or error}); "
                "choose another port, or 0 to turn /metrics off"
            ) from error
        await self.server.start()
        self._tasks = [
            asyncio.create_task(self.hub.run(), name="generator-producer"),
            asyncio.create_task(self.hub.maintain(), name="generator-published-buckets"),
            asyncio.create_task(self.ingest.intake.run(), name="generator-ingest"),
            asyncio.create_task(self._apply_settings(), name="generator-settings"),
        ]
        if self.shared is not None:
            self._tasks += [
                asyncio.create_task(self.shared.run(), name="generator-history"),
                asyncio.create_task(self._report_history(self.shared), name="generator-history-health"),
            ]
            # Serve once the first sync is done (or Redis was found down): a replica that starts up knows
            # the published series Redis holds before the streamer can ask it for them.
            await self.shared.synced.wait()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(RANDOM_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        if self.shared is None:
            await self.health.set(INGEST_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        spec = self.hub.spec
        logger.info(
            "generator serving",
            extra={
                "address": self.address,
                "tls": credentials is not None,
                "frequency": str(spec.frequency),
                "retention": str(spec.retention),
                "series": ",".join(spec.series),
                "published": len(self.hub.published),
                "history": redisclient.redacted(self.settings.history_url) if self.shared is not None else "memory",
                "ingest_auth": "open" if self.ingest.tokens.open else "tokens",
                "client_certificates": bool(self.settings.tls_client_ca_file),
                "seed": self.settings.seed,
                "settings_version": self.settings_file.version,
            },
        )

    async def _apply_settings(self) -> None:
        async for spec in self.settings_file.changes():
            self.hub.apply(spec)

    async def drain(self) -> None:
        """Steps 1-3 of shutdown: NOT_SERVING, refuse new streams, end streams in flight."""
        grace = self.settings.grace_period.seconds
        logger.info("draining: health NOT_SERVING")
        await self.health.enter_graceful_shutdown()
        self.gate.close()
        self.ingest.close()
        self.hub.drain()
        logger.info("draining: refusing new streams, ending %d in flight", self.gate.active)
        if await self.gate.wait_idle(grace):
            logger.info("draining: all streams ended")
        else:
            logger.warning("draining: %d streams still open after %.1fs; cancelling them", self.gate.active, grace)

    async def stop(self) -> None:
        """Drain (if not done), stop the server, cancel and await the background tasks."""
        if self._stopped:
            return
        self._stopped = True
        started = time.monotonic()
        if not self.gate.closed:
            await self.drain()
        remaining = max(0.0, self.settings.grace_period.seconds - (time.monotonic() - started))
        logger.info("stopping gRPC server")
        await self.server.stop(min(remaining, FINAL_STOP_GRACE_S))
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results, strict=True):
            if isinstance(result, Exception):
                logger.error("%s failed", task.get_name(), exc_info=result)
        self.hub.close()
        if self.shared is not None:
            await self.shared.aclose()
        self.metrics.close()
        logger.info("generator stopped")

    def fault(self) -> BaseException | None:
        """The error a background task stopped with, if any (they only stop on a fault or at shutdown)."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set or a background task fails, then shut down in order.

        A background task's fault is raised after the shutdown, so the process exits non-zero. A start
        that fails (:class:`StartupError`) releases what it had bound before raising.
        """
        try:
            await self.start()
        except BaseException:
            await self.server.stop(None)
            self.metrics.close()
            raise
        stopper = asyncio.create_task(stop.wait(), name="generator-stop-signal")
        try:
            await asyncio.wait((stopper, *self._tasks), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            await asyncio.gather(stopper, return_exceptions=True)
            fault = self.fault()
            await self.stop()
        if fault is not None:
            raise fault

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
