"""Prometheus metrics of the streamer, in a registry the app owns (tests build many apps per process).

Counting happens where it is cheap: events and bytes are added once per feed
per flush (``clients x size``), never per client write, so metrics cost
nothing on the per-client path.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "StreamerMetrics"]


class StreamerMetrics:
    """The streamer's instruments; ``render()`` gives the text exposition format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ns = "pulsestream_streamer"
        self.connections = Gauge(f"{ns}_sse_connections", "Open SSE connections.", registry=self.registry)
        self.connections_total = Counter(
            f"{ns}_sse_connections_accepted", "SSE connections accepted since start.", registry=self.registry
        )
        self.events_sent = Counter(
            f"{ns}_sse_events_sent", "SSE events queued to clients, by event type.", ["event"], registry=self.registry
        )
        self.bytes_sent = Counter(f"{ns}_sse_bytes_sent", "SSE bytes queued to clients.", registry=self.registry)
        self.drops = Counter(
            f"{ns}_sse_client_drops",
            "Clients cut off by the server, by reason (slow_consumer, stalled, max_lifetime, server_shutdown).",
            ["reason"],
            registry=self.registry,
        )
        self.upstream_streams = Gauge(
            f"{ns}_upstream_streams", "Open upstream gRPC Subscribe streams.", registry=self.registry
        )
        self.upstream_reconnects = Counter(
            f"{ns}_upstream_reconnects", "Upstream Subscribe streams re-opened after a failure.", registry=self.registry
        )
        self.upstream_points = Counter(
            f"{ns}_upstream_points", "Points accepted from the generator.", registry=self.registry
        )
        self.points_sent = Counter(
            f"{ns}_points_sent",
            "Points queued to SSE clients (a point counts once per client that gets it).",
            registry=self.registry,
        )
        self.queue_fill = Gauge(
            f"{ns}_client_queue_fill_ratio",
            "Fill of the fullest client queue (0 = empty, 1 = about to be dropped as a slow consumer).",
            registry=self.registry,
        )
        self.duplicates = Counter(
            f"{ns}_upstream_duplicates", "Points dropped as duplicates by sequencing.", registry=self.registry
        )
        self.connection_paths = Counter(
            f"{ns}_sse_connections_by_path",
            "SSE connections by how they are written: fast (uvicorn's connection, direct writes), "
            "no_direct_writes (uvicorn's connection without chunked framing), fallback (through ASGI only).",
            ["path"],
            registry=self.registry,
        )
        self.requests_refused = Counter(
            f"{ns}_requests_refused",
            "Requests refused by the access gate, by reason (unauthorized, rate_limited, too_many_streams).",
            ["reason"],
            registry=self.registry,
        )
        self.topics = Gauge(f"{ns}_topics", "Active (series, resolution) topics.", registry=self.registry)
        self.views = Gauge(
            f"{ns}_built_views",
            "Active (series, width) views the streamer builds from a topic (maxPoints widths the generator lacks).",
            registry=self.registry,
        )
        self.feeds = Gauge(
            f"{ns}_feeds",
            "Active feeds: distinct (series set, view, format) streams, each encoded once for all its clients.",
            registry=self.registry,
        )
        self.degradations = Counter(
            f"{ns}_client_degradations",
            "Clients moved to a coarser view because their queue passed half its bound, by the view moved to.",
            ["to"],
            registry=self.registry,
        )
        self.delivery_lag = Histogram(
            f"{ns}_delivery_lag_seconds",
            "Time from a point's timestamp to its event being queued to clients (oldest point of each flush).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )

    def track_queue_fill(self, fill: Callable[[], float]) -> None:
        """Compute the queue fill on scrape rather than on every push."""
        self.queue_fill.set_function(fill)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
