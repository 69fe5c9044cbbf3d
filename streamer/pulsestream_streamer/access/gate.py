"""The gate in front of ``/v1/*``: who the caller is, per-client rate limit, credential check, stream cap.

An ASGI middleware rather than a route dependency, for two reasons: it sees
a streaming response end (the wrapped app returns only when the SSE stream is
over), so the stream cap counts exactly the streams that are open; and it
answers before any route runs, so a refused request costs no parsing, no
upstream subscription and no log line beyond a debug one.

Per request to ``/v1/*`` (and to ``/health``, ``/metrics`` and the OpenAPI
description when ``protect_health_and_metrics`` is on, without rate limit or
stream cap, so probes are never throttled):

1. the credential (an API key, a stream token, a provider's JWT) is turned into a
   :class:`~.principal.Principal`; the client is its id (a token counts as its
   key), else the address (:mod:`.clientid`);
2. the client's token bucket must hold a token, else ``429`` + ``Retry-After``
   (before a refusal, so guessing keys or forging tokens is throttled too);
3. a provider's token signed by a key the JWKS lacks gets one early JWKS fetch
   (rate limited by :class:`~.jwks.JwksSource`) and is checked again;
4. the credential must be accepted, else ``401`` + ``WWW-Authenticate: Bearer``
   (with ``error="invalid_token"`` and a description when one was presented);
5. for ``/v1/stream``, the client must hold fewer than ``maxStreamsPerClient``
   streams, else ``429`` + ``Retry-After``.

The principal is handed to the routes in the request state (``principal``,
and ``client_id``); they apply its scope. Expiry matters only here, when a
request arrives: an open stream is never cut because its token expired.

Error bodies are ``{"error": {"code": ..., "message": ...}}`` and never hold a key or a token.
Limits follow the live settings: the current ``rateLimit`` is read on every
request and applied when it changed; the key file and the token secret files
are re-read at most every ``poll_interval`` seconds, on the request path, so
rotation needs no task.
CORS preflights (``OPTIONS`` with ``Access-Control-Request-Method``) pass
through untouched: the CORS middleware, outside this one, answers them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from pulsestream.spec import RateLimit
from pulsestream_streamer.access.clientid import ClientIdentifier
from pulsestream_streamer.access.idp import IdpTokens, UnknownSigningKey
from pulsestream_streamer.access.keys import KeyStore, credential_query
from pulsestream_streamer.access.principal import (
    Authenticator,
    Credential,
    Principal,
    Unauthenticated,
    presented_credential,
)
from pulsestream_streamer.access.ratelimit import RateLimiter, retry_after_header
from pulsestream_streamer.access.tokens import Tokens, TokenSecrets

logger = logging.getLogger(__name__)

STREAM_PATH = "/v1/stream"
#: Protected too with ``protect_health_and_metrics``: the probes and the API's own description.
PROTECTABLE = ("/health", "/metrics", "/openapi.json", "/redoc")


class AccessGate:
    """Everything the middleware decides with: keys, tokens, the provider, client ids, limits, live limits."""

    def __init__(
        self,
        keys: KeyStore,
        clients: ClientIdentifier,
        limiter: RateLimiter,
        limits: Callable[[], RateLimit] | None = None,
        *,
        tokens: Tokens | None = None,
        idp: IdpTokens | None = None,
        protect_health_and_metrics: bool = False,
        clock: Callable[[], float] = time.monotonic,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.keys = keys
        self.tokens = tokens if tokens is not None else Tokens(TokenSecrets())
        self.idp = idp
        self.auth = Authenticator(keys, self.tokens, idp)
        self.clients = clients
        self.limiter = limiter
        self._limits = limits
        self.protect_health_and_metrics = protect_health_and_metrics
        self._clock = clock
        self.on_refused = on_refused
        self._next_key_check = clock() + keys.poll_interval
        self._seen: RateLimit | None = None

    def refresh(self) -> None:
        """Apply a changed ``rateLimit`` and re-read the key file when its poll interval has passed."""
        if self._limits is not None:
            limits = self._limits()
            if limits is not self._seen and limits != self.limiter.limits:  # identity first: the spec rarely changes
                logger.info(
                    "rate limits applied",
                    extra={
                        "requests_per_second": limits.requests_per_second,
                        "burst": limits.burst,
                        "max_streams_per_client": limits.max_streams_per_client,
                    },
                )
                self.limiter.configure(limits)
            self._seen = limits
        now = self._clock()
        if now >= self._next_key_check:
            self._next_key_check = now + self.keys.poll_interval
            if self.keys.key_file is not None:
                self.keys.reload()
            if self.tokens.secrets.configured:
                self.tokens.secrets.reload()

    def refused(self, code: str) -> None:
        """Count a refusal (``unauthorized``, ``forbidden``, ``rate_limited``, ``too_many_streams``) if wired."""
        if self.on_refused is not None:
            self.on_refused(code)

    def secrets(self) -> tuple[str, ...]:
        """Every secret in force (keys, token secrets), for the log redaction filter; never log these."""
        return self.keys.secrets() + self.tokens.secrets.secrets()

    def authenticate(self, credential: Credential | None) -> Principal | Unauthenticated | UnknownSigningKey:
        """The caller's principal, why it is refused, or the provider key its token needs fetched."""
        try:
            return self.auth.authenticate(credential)
        except (Unauthenticated, UnknownSigningKey) as outcome:
            return outcome

    async def after_fetch(
        self, credential: Credential | None, unknown: UnknownSigningKey
    ) -> Principal | Unauthenticated:
        """Fetch the provider's keys once (rate limited by the source) and check the credential again."""
        if self.idp is not None and await self.idp.jwks.ensure(unknown.kid):
            outcome = self.authenticate(credential)
            if not isinstance(outcome, UnknownSigningKey):
                return outcome
        return Unauthenticated("invalid_token", "the token's signing key is not in the identity provider's JWKS")

    def client_of(self, outcome: object, scope: Scope, headers: Headers) -> str:
        """The rate-limited client: the principal's id, else the address (trusted proxies believed)."""
        if isinstance(outcome, Principal) and outcome.client_id is not None:
            return outcome.client_id
        peer = scope.get("client")
        return self.clients.identify(
            None, peer[0] if peer else None, ", ".join(headers.getlist("x-forwarded-for")) or None
        )


Response = tuple[int, list[tuple[bytes, bytes]], bytes]


def _json(status: int, code: str, message: str, headers: dict[str, str]) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *((name.lower().encode(), value.encode()) for name, value in headers.items()),
    ]
    return status, raw, body


class AccessMiddleware:
    """ASGI middleware applying an :class:`AccessGate` (see the module docstring)."""

    def __init__(self, app: ASGIApp, gate: AccessGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        is_v1 = path == "/v1" or path.startswith("/v1/")
        protected = is_v1 or (self.gate.protect_health_and_metrics and path in PROTECTABLE)
        headers = Headers(scope=scope)
        if not protected or (scope["method"] == "OPTIONS" and "access-control-request-method" in headers):
            await self.app(scope, receive, send)
            return

        gate = self.gate
        gate.refresh()
        credential = presented_credential(headers, credential_query(scope.get("query_string", b"")))
        outcome = gate.authenticate(credential)
        client = gate.client_of(outcome, scope, headers)
        if is_v1:
            wait = gate.limiter.acquire(client)
            if wait:
                logger.debug("request refused: rate limit", extra={"client": client, "path": path})
                gate.refused("rate_limited")
                await _send(send, *_json(429, "rate_limited", _rate_message(gate), _retry(wait)))
                return
        if isinstance(outcome, UnknownSigningKey):  # after the bucket: made-up kids are throttled first
            outcome = await gate.after_fetch(credential, outcome)
            client = gate.client_of(outcome, scope, headers)
        if isinstance(outcome, Unauthenticated):
            logger.debug("request refused: %s", outcome.reason, extra={"client": client})
            gate.refused("unauthorized")
            await _send(send, *_json(401, "unauthorized", str(outcome), _challenge(outcome)))
            return
        state = scope.setdefault("state", {})  # request.state.principal and .client_id for the routes
        state["principal"] = outcome
        state["client_id"] = client
        if path != STREAM_PATH:
            await self.app(scope, receive, send)
            return
        wait = gate.limiter.open_stream(client)
        if wait:
            logger.debug("stream refused: cap reached", extra={"client": client})
            cap = gate.limiter.limits.max_streams_per_client
            message = (
                f"at most {cap} concurrent streams per client (an API key, else an address: browser tabs and users "
                "behind one NAT share it); close one, retry later, or raise rateLimit.maxStreamsPerClient "
                "(STREAMER_MAX_STREAMS_PER_CLIENT)"
            )
            gate.refused("too_many_streams")
            await _send(send, *_json(429, "too_many_streams", message, _retry(wait)))
            return
        try:
            await self.app(scope, receive, send)
        finally:
            gate.limiter.close_stream(client)


def _challenge(refusal: Unauthenticated) -> dict[str, str]:
    """RFC 6750 section 3: no error attribute when no credential came, ``invalid_token`` and why otherwise."""
    if refusal.reason == "missing":
        return {"www-authenticate": 'Bearer realm="pulsestream"'}
    description = str(refusal).replace("\\", "").replace('"', "'")
    challenge = f'Bearer realm="pulsestream", error="{refusal.reason}", error_description="{description}"'
    return {"www-authenticate": challenge}


def _retry(seconds: float) -> dict[str, str]:
    return {"retry-after": retry_after_header(seconds)}


def _rate_message(gate: AccessGate) -> str:
    limits = gate.limiter.limits
    return f"rate limit of {limits.requests_per_second:g} requests/s (burst {limits.burst}) per client exceeded"


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
