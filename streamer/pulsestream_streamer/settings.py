"""The streamer's process settings: one frozen model, built once from ``STREAMER_*`` variables.

Every field is one environment variable (``STREAMER_`` + the field name in
upper case, or the shared name given in ``json_schema_extra``), has a default
that works on a laptop, and says its unit and why it has that default. The
README's settings table is generated from this class (``make readme``).

The live-tunable values (buffer size, flush and heartbeat intervals, the
series list, the rate limits) are read here as the *base* of the live
settings file: the file (``PULSESTREAM_SETTINGS_FILE``) overrides them at run
time, the environment supplies what the file leaves out
(:meth:`StreamerSettings.base_spec`). They are derived from the spec's fields
(:func:`pulsestream.liveenv.live`), bounds and cross-field rules included.
"""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pulsestream.durations import Duration, within
from pulsestream.envsettings import Conflict
from pulsestream.liveenv import LiveEnvSettings, live
from pulsestream.spec import SeriesName
from pulsestream_streamer.access.clientid import parse_networks
from pulsestream_streamer.access.keys import parse_keys

__all__ = ["StreamerSettings"]


#: A browser Origin: scheme, host, optional port; no path, no trailing slash.
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")


class StreamerSettings(LiveEnvSettings):
    """Everything the streamer process needs to start; see the README's settings table."""

    env_prefix = "STREAMER_"

    # --- HTTP server -----------------------------------------------------------------------------
    host: str = Field(
        default="127.0.0.1",
        description="Interface the HTTP server binds; loopback on a laptop, containers set 0.0.0.0.",
    )
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP port (0 = pick a free one).")
    backlog: int = Field(
        default=4096,
        ge=16,
        le=65535,
        description="Listen backlog: pending TCP connections; large so a reconnect storm of browsers is absorbed.",
    )
    limit_concurrency: int = Field(
        default=16384,
        ge=10,
        description="Most concurrent HTTP connections before new ones get 503; above the 10k SSE clients one pod "
        "is sized for, below common file-descriptor limits. Lowered at start (with a warning) to what the "
        "file-descriptor limit leaves room for, so the process never runs out of descriptors.",
    )
    max_request_head: int = Field(
        default=65536,
        ge=4096,
        le=16 * 1024 * 1024,
        description="Most bytes of a request line plus headers; a larger head gets 400 with a JSON body before it "
        "is parsed (uvicorn's httptools parser has no limit of its own).",
    )
    request_head_timeout: Annotated[Duration, within("1s", "10m")] = Field(
        default=Duration("10s"),
        description="Time a connection gets to send a complete request head, from its opening or the first byte "
        "of its next request; then 408 and closed (nginx's client_header_timeout). Bounds what idle or slowloris "
        "sockets hold: without it they keep a slot of limit_concurrency forever. Streams are never timed.",
    )
    socket_send_buffer: int = Field(
        default=0,
        ge=0,
        le=64 * 1024 * 1024,
        description="SO_SNDBUF of client connections in bytes; 0 = kernel autotuning (up to MBs each). A small "
        "value bounds the kernel memory a stalled client pins and makes it show up as a slow consumer sooner.",
    )
    graceful_shutdown: Annotated[Duration, within("0ms", "10m")] = Field(
        default=Duration("10s"),
        description="On SIGTERM, how long open connections get to finish after clients were told to reconnect.",
    )
    cors_allowed_origins: list[str] = Field(
        default_factory=list,
        description="Comma-separated origins allowed to call the API from a browser (empty = same origin only).",
    )
    api_keys: str = Field(
        default="",
        description="Comma-separated API keys for /v1/*; empty means open (see the security section).",
        json_schema_extra={"secret": True},
    )
    api_keys_file: str = Field(
        default="",
        description="File of API keys, one per line (# comments), e.g. a mounted Secret; re-read by content hash "
        "every settings_poll_interval, so keys rotate without a restart. A line KEY series=cpu,mem* limits the key "
        "to the series matching those globs; a key alone grants every series. Adds to STREAMER_API_KEYS.",
    )
    token_secret_file: str = Field(
        default="",
        description="File holding the secret that signs stream tokens (POST /v1/tokens; HS256, at least 32 bytes, "
        "e.g. openssl rand -base64 48), e.g. a mounted Secret; re-read by content hash like the key file. Empty = "
        "a random secret made at start: tokens then work with this process only; replicas behind one address "
        "need the same file.",
    )
    token_previous_secret_file: str = Field(
        default="",
        description="File holding the previous token secret while rotating: tokens it signed are still accepted "
        "(new ones are signed with STREAMER_TOKEN_SECRET_FILE's); empty it once the longest TTL has passed.",
    )
    token_ttl: Annotated[Duration, within("1s", "24h")] = Field(
        default=Duration("15m"),
        description="Lifetime of a minted token when the request names none; short, since a token in a URL may "
        "be kept by proxies and browser history (an open stream outlives its token).",
    )
    token_max_ttl: Annotated[Duration, within("1s", "24h")] = Field(
        default=Duration("24h"),
        description="Longest lifetime a token request may ask for (ttl in POST /v1/tokens; 24h at most).",
    )
    token_leeway: Annotated[Duration, within("0ms", "5m")] = Field(
        default=Duration("30s"),
        description="Clock skew allowed when checking a token's exp, nbf and iat (minted and identity-provider "
        "tokens alike): two machines' clocks differ by a few seconds, and NTP keeps them well within this.",
    )
    jwt_jwks_url: str = Field(
        default="",
        description="An identity provider's JWKS: an https:// URL (its jwks_uri) or a file path (e.g. a mounted "
        "ConfigMap, for clusters that cannot reach it). Set: RS256/ES256 JWTs it signed are accepted on /v1/*, "
        "granting the series their series claim lists. Needs STREAMER_JWT_ISSUER and STREAMER_JWT_AUDIENCE.",
    )
    jwt_issuer: str = Field(default="", description="The iss every identity-provider JWT must carry (exactly).")
    jwt_audience: str = Field(
        default="", description="The aud every identity-provider JWT must carry (or list) for this streamer."
    )
    jwt_series_claim: str = Field(
        default="series",
        min_length=1,
        description="Claim of identity-provider JWTs listing the series globs granted (a list, or one string split "
        "by spaces or commas); a token without it grants no series.",
    )
    jwt_jwks_refresh: Annotated[Duration, within("1s", "24h")] = Field(
        default=Duration("5m"),
        description="How often the JWKS is fetched again; a token signed with an unknown kid also fetches it (at "
        "most every 10s or this, if shorter), so a provider's key rotation is picked up at once. A failed fetch "
        "keeps the last good keys (shown in /health).",
    )
    jwt_jwks_ca_file: str = Field(
        default="",
        description="PEM CA bundle to verify the JWKS URL's TLS certificate (empty = the system's CAs); "
        "verification is never off.",
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated CIDRs (or * for any peer) of proxies whose X-Forwarded-For/-Proto are "
        "believed: they name the client for rate limits and logs. Empty = the direct peer is the client.",
    )
    protect_health_and_metrics: bool = Field(
        default=False,
        description="Whether /health, /metrics and the API description (/openapi.json, /redoc) need an API key "
        "too; off so probes and Prometheus scrape without one (they are never rate limited).",
    )
    cors_allow_credentials: bool = Field(
        default=False,
        description="Let browsers send cookies/HTTP auth cross-origin; needs explicit origins (never with *).",
    )
    rate_limit_requests_per_second: float = live(
        "rateLimit.requestsPerSecond", "Sustained /v1 requests per second per client, the token refill rate."
    )
    rate_limit_burst: int = live("rateLimit.burst", "Requests a client may make at once before the rate applies.")
    max_streams_per_client: int = live(
        "rateLimit.maxStreamsPerClient",
        "Concurrent SSE streams per client; one stream carries many series, so a few suffice.",
    )

    # --- upstream (gRPC) -------------------------------------------------------------------------
    generator_address: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: ["127.0.0.1:50051"],
        description="Generator gRPC address host:port; a comma-separated list means replicas to fail over between.",
    )
    keepalive_time: Annotated[Duration, within("1s", "1h")] = Field(
        default=Duration("30s"),
        description="Interval of gRPC keepalive pings on the upstream channel; finds a dead generator behind NAT.",
    )
    keepalive_timeout: Annotated[Duration, within("100ms", "10m")] = Field(
        default=Duration("10s"),
        description="How long a keepalive ping may stay unanswered before the channel is declared dead.",
    )
    connect_timeout: Annotated[Duration, within("100ms", "10m")] = Field(
        default=Duration("5s"),
        description="Time one connection attempt to a generator gets (gRPC's minimum connect timeout); a replica "
        "that does not answer within it counts as down and the next address is tried.",
    )
    unary_timeout: Annotated[Duration, within("100ms", "10m")] = Field(
        default=Duration("5s"),
        description="Deadline of unary calls (ListSeries), retries included.",
    )
    unary_retries: int = Field(
        default=3,
        ge=1,
        le=5,
        description="Attempts for unary calls on UNAVAILABLE (gRPC retry policy in the service config).",
    )
    max_message_size: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Largest gRPC message accepted, in bytes; history replays arrive in large batches.",
    )
    reconnect_base: Annotated[Duration, within("10ms", "1m")] = Field(
        default=Duration("100ms"),
        description="First delay before resubscribing after an upstream failure; doubles per failure.",
    )
    reconnect_cap: Annotated[Duration, within("100ms", "10m")] = Field(
        default=Duration("5s"),
        description="Longest delay between resubscribe attempts (full jitter below it).",
    )
    tls_ca_file: str = Field(
        default="",
        description="PEM CA bundle to verify the generator; set to use TLS upstream (empty = plaintext).",
    )
    tls_cert_file: str = Field(default="", description="PEM client certificate for mutual TLS upstream (optional).")
    tls_key_file: str = Field(default="", description="PEM private key of the client certificate (optional).")
    tls_server_name: str = Field(
        default="",
        description="Override of the name checked in the generator's certificate (empty = the address's host).",
    )

    # --- hub, ring, streams ----------------------------------------------------------------------
    hub_linger: Annotated[Duration, within("0ms", "1h")] = Field(
        default=Duration("30s"),
        description="How long an upstream subscription stays open after its last client left; a reload or "
        "reconnect within it costs no new gRPC stream.",
    )
    ring_capacity: int = Field(
        default=20000,
        ge=16,
        le=10_000_000,
        description="Points kept per (series, resolution) for window snapshots and resume; covers max_window at "
        "30 ms frequency.",
    )
    max_series: int = Field(default=16, ge=1, le=64, description="Most series one stream may ask for.")
    default_window: Annotated[Duration, within("0ms", "24h")] = Field(
        default=Duration("5m"),
        description="History sent in the first snapshot when the request has no window parameter.",
    )
    max_window: Annotated[Duration, within("1s", "24h")] = Field(
        default=Duration("10m"),
        description="Largest window a client may ask for; also how much history a new subscription loads.",
    )
    ready_timeout: Annotated[Duration, within("0ms", "1m")] = Field(
        default=Duration("3s"),
        description="How long a first client waits for a new subscription's history before its snapshot goes out "
        "with what has arrived.",
    )

    # --- clients ---------------------------------------------------------------------------------
    client_max_queue_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=4096,
        description="Bytes of events queued for one client before it is dropped as a slow consumer "
        "(with buffer_size events, the bound on a client's memory).",
    )
    client_write_buffer: int = Field(
        default=16 * 1024,
        ge=0,
        le=64 * 1024 * 1024,
        description="Bytes a connection's transport buffers before its writer waits (asyncio's default is 64 KiB); "
        "small, so a peer that stopped reading is noticed and bounded early. 0 = asyncio's default.",
    )
    client_stall_timeout: Annotated[Duration, within("1s", "1h")] = Field(
        default=Duration("30s"),
        description="A connection whose socket accepts nothing for this long is closed (dead or stalled peer).",
    )
    client_max_lifetime: Annotated[Duration, within("0ms", "24h")] = Field(
        default=Duration("1h"),
        description="Streams are closed (clients resume elsewhere) after this, +-10% jitter, so load rebalances "
        "across replicas; 0ms = never.",
    )
    sse_retry: Annotated[Duration, within("0ms", "10m")] = Field(
        default=Duration("2s"),
        description="The SSE retry: value sent first: how long a browser waits before reconnecting.",
    )
    shutdown_retry: Annotated[Duration, within("0ms", "10m")] = Field(
        default=Duration("250ms"),
        description="The retry: value sent with the server_shutdown event, so browsers move to another pod quickly.",
    )
    sweep_interval: Annotated[Duration, within("100ms", "1m")] = Field(
        default=Duration("1s"),
        description="Period of the client sweep that sends heartbeats and enforces stall and lifetime limits.",
    )

    # --- live-tunable defaults (the settings file overrides them) --------------------------------
    buffer_size: int = live("bufferSize", "Events queued per client before it is dropped as a slow consumer.")
    flush_interval: Duration = live(
        "flushInterval", "Batching window: points arriving within it go to each client as one event."
    )
    heartbeat_interval: Duration = live(
        "heartbeatInterval", "Idle time before an SSE heartbeat comment; below proxies' 60 s idle timeouts."
    )
    series: list[SeriesName] = live("series", "Series offered when the generator's catalogue is unavailable.")

    # --- the live settings file ------------------------------------------------------------------
    settings_poll_interval: Annotated[Duration, within("100ms", "1m")] = Field(
        default=Duration("1s"),
        description="How often the live settings file is re-read (by content hash; survives ConfigMap swaps).",
    )

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, value: str) -> str:
        parse_keys(value, ",")  # InvalidKeyError is a ValueError and never quotes a key
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _jwks_location(cls, value: str) -> str:
        scheme, sep, _ = value.partition("://")
        if sep and scheme.lower() != "https":
            raise ValueError("a JWKS URL must be https:// (whoever can change the keys can forge any token)")
        if sep and not _:
            raise ValueError("the JWKS URL has no host")
        return value

    @model_validator(mode="after")
    def _access_rules(self) -> Self:
        conflicts: list[tuple[list[str], str, str]] = []
        if self.token_ttl.seconds > self.token_max_ttl.seconds:
            conflicts.append(
                (["token_ttl", "token_max_ttl"], "TtlAboveMax", "the default token TTL is above the longest allowed")
            )
        if self.jwt_jwks_url and not (self.jwt_issuer and self.jwt_audience):
            conflicts.append(
                (
                    ["jwt_jwks_url", "jwt_issuer", "jwt_audience"],
                    "JwtChecksMissing",
                    "identity-provider JWTs need both an issuer and an audience to check",
                )
            )
        if conflicts:
            raise Conflict(conflicts)
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not an origin such as https://dash.example.com or http://host:3000")
        return value

    @field_validator("cors_allow_credentials")
    @classmethod
    def _no_wildcard_with_credentials(cls, value: bool, info: ValidationInfo) -> bool:
        if value and "*" in info.data.get("cors_allowed_origins", []):
            raise ValueError("browsers refuse credentials with a wildcard origin: list the origins instead of *")
        return value

    @field_validator("generator_address")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for address in value:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{address!r} is not host:port")
        return value
