"""The generator's Prometheus metrics, in a registry the app owns.

A private :class:`CollectorRegistry` (not the process-global one) keeps two
apps in one test process apart and makes the app the owner of what it
exports. The endpoint is prometheus_client's small threaded HTTP server on
``GENERATOR_METRICS_PORT`` (0 = off), started and stopped with the app.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

PREFIX = "pulsestream_generator"


class GeneratorMetrics:
    """Counters and gauges of production, fan-out and stream lifecycle."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.subscribers = Gauge(
            f"{PREFIX}_subscribers", "Live Subscribe streams, by resolution", ["resolution"], registry=r
        )
        self.points_produced = Counter(
            f"{PREFIX}_points_produced", "Raw points produced (one per series per tick)", registry=r
        )
        self.points_sent = Counter(f"{PREFIX}_points_sent", "Points handed to Subscribe streams", registry=r)
        self.overflows = Counter(
            f"{PREFIX}_subscriber_overflows",
            "Subscribers ended with RESOURCE_EXHAUSTED for falling further behind than their buffer",
            registry=r,
        )
        self.buffer_fill = Gauge(
            f"{PREFIX}_subscriber_buffer_fill_ratio",
            "Fill of the fullest subscriber buffer (0 = empty, 1 = about to overflow)",
            registry=r,
        )
        self.stream_starts = Counter(f"{PREFIX}_stream_starts", "Server streams started, by RPC", ["rpc"], registry=r)
        self.stream_ends = Counter(
            f"{PREFIX}_stream_ends", "Server streams ended, by RPC and reason", ["rpc", "reason"], registry=r
        )
        self.tick_lag = Gauge(
            f"{PREFIX}_tick_lag_seconds", "How late the last tick was produced after its wall-clock time", registry=r
        )
        self.connections = Gauge(
            f"{PREFIX}_connections",
            "Client connections (distinct gRPC peers) with at least one live Subscribe stream",
            registry=r,
        )
        self._peers: Tally[str] = Tally()
        self.connections.set_function(lambda: len(self._peers))
        self.send_lag = Histogram(
            f"{PREFIX}_send_lag_seconds",
            "End-to-end lag at send time: now minus the point's timestamp, once per live batch handed to a "
            "stream (aggregates carry their bucket start, so 1s/5s/1m add up to one bucket width)",
            ["resolution"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
            registry=r,
        )
        self.published_series = Gauge(
            f"{PREFIX}_published_series",
            "Published series held (declared, or created by their first point)",
            registry=r,
        )
        self.ingest_points = Counter(
            f"{PREFIX}_ingest_points",
            "Published points received, by outcome: accepted (stored), duplicate (already stored), out_of_order "
            "(older than the newest of their series), late (stored, but left out of an already closed bucket), "
            "refused (in a batch refused as a whole, or dropped from an OTLP export)",
            ["outcome"],
            registry=r,
        )
        self.ingest_requests = Counter(
            f"{PREFIX}_ingest_requests",
            "Publish and Export calls answered, by RPC and status code",
            ["rpc", "code"],
            registry=r,
        )
        self.ingest_in_flight = Gauge(
            f"{PREFIX}_ingest_in_flight", "Publish and Export batches queued or being stored", registry=r
        )
        self._history: HistoryMetrics | None = None
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def history(self) -> HistoryMetrics:
        """The shared history's metrics, registered on first use (a memory history exports none)."""
        if self._history is None:
            self._history = HistoryMetrics(self.registry)
        return self._history

    def track_buffer_fill(self, fill: Callable[[], float]) -> None:
        """Compute the buffer fill on scrape rather than on every tick."""
        self.buffer_fill.set_function(fill)

    def track_published_series(self, count: Callable[[], int]) -> None:
        self.published_series.set_function(count)

    def peer_opened(self, peer: str) -> None:
        """A Subscribe stream of ``peer`` (one gRPC connection) started."""
        self._peers[peer] += 1

    def peer_closed(self, peer: str) -> None:
        """A Subscribe stream of ``peer`` ended; the connection no longer counts once its last one has."""
        self._peers[peer] -= 1
        if self._peers[peer] <= 0:
            del self._peers[peer]

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics endpoint; return its port (0 when disabled)."""
        if port == 0:
            return 0
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        bound = int(self._server.server_port)
        logger.info("metrics endpoint listening", extra={"address": f"http://{host}:{bound}/metrics"})
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class HistoryMetrics:
    """Metrics of the shared published history (``GENERATOR_HISTORY_URL``): only exported when one is set."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            f"{PREFIX}_history_up",
            "1 while the shared published history (GENERATOR_HISTORY_URL) is reachable and followed, 0 while not "
            "(Publish answers UNAVAILABLE, Subscribe serves the local mirror); absent with the memory history",
            registry=registry,
        )
        self.append = Histogram(
            f"{PREFIX}_history_append_seconds",
            "Time to append one ingest batch to the shared history (one script call), successful or not",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.follow_lag = Gauge(
            f"{PREFIX}_history_follow_lag_seconds",
            "How long ago the follower last heard from the shared history (a read returned); grows while it "
            "is unreachable",
            registry=registry,
        )
        self.mirror_delay = Histogram(
            f"{PREFIX}_history_mirror_delay_seconds",
            "Now minus the newest point's timestamp, per run of points the follower mirrored (publish -> "
            "mirror for real-time producers)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0),
            registry=registry,
        )
        self.errors = Counter(
            f"{PREFIX}_history_errors",
            "Failed calls to the shared history, by operation (append, seal, follow, sync, expire)",
            ["op"],
            registry=registry,
        )
