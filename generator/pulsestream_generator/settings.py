"""The generator's process settings: one frozen object built once from ``GENERATOR_*`` variables.

The live-tunable fields (``frequency``, ``retention``, ``buffer_size``,
``series``, ``published``) are only the *defaults*: they form the ``base`` spec of the live
settings file (``PULSESTREAM_SETTINGS_FILE``), whose keys override them while
the process runs (:meth:`GeneratorSettings.base_spec`). They are derived from
the spec's fields (:func:`pulsestream.liveenv.live`), bounds and rules included.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from pulsestream.durations import Duration, within
from pulsestream.liveenv import LiveEnvSettings, live
from pulsestream.spec import PublishedSeries, SeriesName

#: Ingest tokens are bearer tokens (RFC 6750's b64token): what fits in ``authorization: Bearer TOKEN``.
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


def _tokens(tokens: list[str]) -> list[str]:
    for token in tokens:
        if not TOKEN_PATTERN.match(token):
            raise ValueError("an ingest token may hold only letters, digits and -._~+/ (then = padding)")
    return tokens


_HISTORY_SCHEMES = ("redis://", "rediss://")


def _history_url(url: str) -> str:
    if url and not url.startswith(_HISTORY_SCHEMES):
        raise ValueError("the history URL must start with redis:// or rediss:// (empty = in memory)")
    return url


def _key_prefix(prefix: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", prefix):
        raise ValueError("a key prefix is 1 to 64 letters, digits and _ . : -")
    return prefix


class GeneratorSettings(LiveEnvSettings):
    """Everything the generator process reads from its environment."""

    env_prefix = "GENERATOR_"

    host: str = Field(
        default="127.0.0.1",
        description="Address the gRPC server binds to. Loopback by default so a laptop run is not exposed; "
        "containers set 0.0.0.0.",
    )
    port: int = Field(
        default=50051,
        ge=0,
        le=65535,
        description="gRPC port (0 picks a free port). 50051 is the conventional gRPC port the streamer dials by "
        "default.",
    )
    seed: int = Field(
        default=42,
        ge=0,
        lt=2**63,
        description="Seed of the deterministic source. Replicas with the same seed emit identical points, which "
        "lets the streamer fail over between them without a gap.",
    )
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics endpoint (HTTP, on the same host as gRPC); 0 turns it off. "
        "9464 is the conventional Prometheus exporter port.",
    )
    grace_period: Annotated[Duration, within("0s", "10m")] = Field(
        default=Duration("10s"),
        description="On SIGTERM/SIGINT, how long in-flight streams get to end (with UNAVAILABLE, so clients "
        "resume elsewhere) before the server cancels what is left. Below Kubernetes' default 30s "
        "terminationGracePeriodSeconds.",
    )
    keepalive_time: Annotated[Duration, within("1s", "24h")] = Field(
        default=Duration("30s"),
        description="Interval of server HTTP/2 keepalive pings on idle connections, so dead peers behind NATs "
        "and load balancers are noticed (30s stays below common 60s idle timeouts).",
    )
    keepalive_timeout: Annotated[Duration, within("1s", "10m")] = Field(
        default=Duration("10s"),
        description="How long a keepalive ping may go unanswered before the connection is closed.",
    )
    keepalive_min_client_interval: Annotated[Duration, within("1s", "1h")] = Field(
        default=Duration("10s"),
        description="Shortest interval between client keepalive pings the server accepts (pings without data "
        "are allowed). gRPC's 5m default would answer a streamer pinging every 10-30s with GOAWAY "
        "too_many_pings.",
    )
    max_connection_age: Annotated[Duration, within("0s", "24h")] = Field(
        default=Duration("30m"),
        description="Connections older than this are asked to reconnect (GOAWAY), so clients spread over new "
        "replicas after a scale-up; 0s means never. Streams cut this way are resumed by sequence.",
    )
    max_connection_age_grace: Annotated[Duration, within("0s", "1h")] = Field(
        default=Duration("30s"),
        description="After max_connection_age, how long open streams may continue before the connection is closed.",
    )
    max_concurrent_streams: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Concurrent RPCs (streams) per HTTP/2 connection; bounds what one client can hold open.",
    )
    tls_cert_file: str = Field(
        default="",
        description="PEM certificate chain for server TLS; empty means plaintext (the default, for loopback and "
        "in-cluster traffic behind a mesh). Set together with GENERATOR_TLS_KEY_FILE.",
    )
    tls_key_file: str = Field(
        default="",
        description="PEM private key for server TLS; set together with GENERATOR_TLS_CERT_FILE.",
        json_schema_extra={"secret": True},
    )
    tls_client_ca_file: str = Field(
        default="",
        description="PEM CA bundle; when set, every RPC needs a client certificate it signed (mutual TLS), "
        "Subscribe included. Needs GENERATOR_TLS_CERT_FILE and GENERATOR_TLS_KEY_FILE.",
    )
    ingest_tokens: Annotated[list[str], AfterValidator(_tokens)] = Field(
        default_factory=list,
        description="Comma-separated bearer tokens for Publish and OTLP Export (gRPC metadata authorization: "
        "Bearer TOKEN, compared in constant time, never logged); empty = ingest is open. Subscribe and "
        "ListSeries stay open: keep the port in-cluster, or require client certificates.",
        json_schema_extra={"secret": True},
    )
    ingest_max_series: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Most published series (declared or created) held at once; a point that would create one "
        "more gets RESOURCE_EXHAUSTED (TOO_MANY_SERIES). Series unwritten for the retention are forgotten.",
    )
    ingest_max_points_per_request: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Most points in one Publish request; more gets RESOURCE_EXHAUSTED (TOO_MANY_POINTS).",
    )
    ingest_max_in_flight: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description="Publish and Export batches queued or being stored at once; one more gets RESOURCE_EXHAUSTED "
        "(INGEST_BUSY) with a RetryInfo delay, so a producer faster than the generator is slowed, not buffered.",
    )
    ingest_max_message_size: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        le=256 * 1024 * 1024,
        description="Largest gRPC request accepted, in bytes (gRPC's and the OpenTelemetry Collector's 4 MiB "
        "default; a Publish of 10,000 points is about 300 KB); a larger one gets RESOURCE_EXHAUSTED from gRPC itself.",
    )
    ingest_undeclared: Literal["create", "refuse"] = Field(
        default="create",
        description="What a point of a series nobody declared (settings: published) does: create the series "
        "(as OTLP producers expect), or be refused with INVALID_ARGUMENT (UNDECLARED_SERIES).",
    )
    ingest_close_delay: Annotated[Duration, within("0s", "1m")] = Field(
        default=Duration("2s"),
        description="A published series' bucket closes at its first point at or after the bucket's end, or this "
        "long after the end by the clock (a series gone quiet); above the producers' flush interval, so "
        "their points are not late.",
    )
    ingest_otlp_max_series_per_metric: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Most series one OTLP metric may create through its attributes; points of further "
        "attribute sets are dropped and reported in the export's partial_success.",
    )
    ingest_otlp_resource_attributes: list[str] = Field(
        default_factory=list,
        description="Comma-separated OTLP resource attributes (e.g. service.name) added to the series name "
        "like data point attributes, so the same metric from two services stays two series.",
    )
    ingest_journal_dir: str = Field(
        default="",
        description="Directory of a write-ahead journal of published points: each batch is written there before "
        "it is acknowledged and replayed at start, so a crashed generator (kill -9, OOM, container restart) "
        "gets back every point it acknowledged; empty = published history in memory only. Not used with "
        "GENERATOR_HISTORY_URL (Redis keeps the points; a warning says so at start).",
    )
    history_url: Annotated[str, AfterValidator(_history_url)] = Field(
        default="",
        description="Where published history lives: empty = this process's memory (one generator); "
        "redis://[:PASSWORD@]HOST:PORT/DB or rediss:// (TLS) = Redis or Valkey Streams shared by every replica "
        "with the same URL (same points, same sequences; each replica mirrors them). Logged with the password "
        "redacted.",
        json_schema_extra={"secret": True},
    )
    history_password_file: str = Field(
        default="",
        description="File holding the Redis password (a mounted Secret; one line, read at start); overrides a "
        "password in GENERATOR_HISTORY_URL. Never logged.",
    )
    history_tls_ca_file: str = Field(
        default="",
        description="PEM CA bundle that verifies the Redis server's certificate with rediss:// (empty = the "
        "system's CAs).",
    )
    history_key_prefix: Annotated[str, AfterValidator(_key_prefix)] = Field(
        default="pulsestream",
        description="Prefix of every Redis key (inside a {hash tag}, so one Redis can hold several "
        "deployments' histories apart); replicas that share history use the same.",
    )
    history_timeout: Annotated[Duration, within("100ms", "1m")] = Field(
        default=Duration("2s"),
        description="Deadline of one Redis command (and of connecting): past it Publish answers UNAVAILABLE "
        "(HISTORY_UNAVAILABLE) and the follower reconnects; above a Redis failover's usual pause.",
    )
    frequency: Duration = live("frequency")
    retention: Duration = live("retention")
    buffer_size: int = live(
        "bufferSize",
        "Per-subscriber buffer, in messages (one per tick); a subscriber further behind gets RESOURCE_EXHAUSTED.",
    )
    series: list[SeriesName] = live("series", "Synthetic series produced, comma-separated.")
    published: list[PublishedSeries] = live(
        "published",
        "Published series declared ahead of their first point, a JSON array such as "
        '[{"name": "orders", "unit": "orders/min", "description": "...", "expectedRange": [0, 500]}].',
    )
    settings_poll_interval: Annotated[Duration, within("10ms", "1m")] = Field(
        default=Duration("1s"),
        description="How often the live settings file is re-read (by content hash, so ConfigMap symlink swaps "
        "are seen).",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("GENERATOR_TLS_CERT_FILE and GENERATOR_TLS_KEY_FILE must be set together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("GENERATOR_TLS_CLIENT_CA_FILE needs GENERATOR_TLS_CERT_FILE and GENERATOR_TLS_KEY_FILE")
        return self
