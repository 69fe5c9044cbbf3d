"""``POST /v1/tokens``: an API key (in a header) traded for a short-lived stream token that may go into URLs.

Body (optional, JSON): ``{"series": ["cpu", "mem*"], "ttl": "15m"}``. Answer
``201`` with ``{"token", "expiresAt" (RFC 3339, UTC), "series" (the granted
globs, ``["**"]`` for every series), "tokenType": "Bearer"}`` and
``Cache-Control: no-store`` (RFC 6749 5.1: a credential is never cached).

- ``series`` narrows the token within the key's scope; every glob must fit in
  the key's (:meth:`~pulsestream_streamer.access.scopes.Scope.first_wider`),
  else ``403 forbidden`` naming the first that does not. Absent: the key's scope.
- ``ttl`` from 1 s to ``STREAMER_TOKEN_MAX_TTL`` (default ``STREAMER_TOKEN_TTL``),
  else ``400 bad_parameter`` naming ``ttl``.
- Only an API key mints: a token or a provider's JWT gets ``403`` (a token that
  could mint tokens would never expire). In open mode anyone may mint (the
  token is not needed there, but pages written for tokens work unchanged).
- The access gate has already authenticated and rate limited the request.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse

from pulsestream.durations import parse_seconds
from pulsestream_streamer.access.gate import AccessGate
from pulsestream_streamer.access.principal import Principal
from pulsestream_streamer.access.scopes import ALL, Scope, ScopeError
from pulsestream_streamer.access.tokens import ANONYMOUS, TokenRejected
from pulsestream_streamer.http.problems import bad_parameter, problem
from pulsestream_streamer.settings import StreamerSettings

__all__ = ["TOKEN_REQUEST_SCHEMA", "mint_token"]

#: Largest request body read: a few dozen globs fit in far less.
MAX_BODY = 16 * 1024
MIN_TTL = 1.0

#: The request body as the OpenAPI description shows it.
TOKEN_REQUEST_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "series": {"type": "array", "items": {"type": "string"}, "description": "Series globs."},
                        "ttl": {"type": "string", "description": "Lifetime, e.g. 15m (default STREAMER_TOKEN_TTL)."},
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}


class _Bad(ValueError):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


async def _body(request: Request) -> dict[str, Any]:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise _Bad("body", f"the request body is larger than {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(bytes(raw))
    except orjson.JSONDecodeError:
        raise _Bad("body", 'the body must be JSON, e.g. {"series": ["cpu"], "ttl": "15m"}') from None
    if not isinstance(body, dict):
        raise _Bad("body", 'the body must be a JSON object, e.g. {"series": ["cpu"], "ttl": "15m"}')
    unknown = sorted(set(body) - {"series", "ttl"})
    if unknown:
        raise _Bad(unknown[0], f"unknown field {unknown[0][:40]!r}: only series and ttl")
    return body


def _asked_scope(value: Any) -> Scope | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Bad("series", 'series must be a list of series globs, e.g. ["cpu", "mem*"]')
    try:
        return Scope.of(value)
    except ScopeError as error:
        raise _Bad("series", str(error)) from None


def _ttl(value: Any, settings: StreamerSettings) -> float:
    longest = settings.token_max_ttl
    if value is None:
        return settings.token_ttl.seconds
    message = f"ttl must be a duration from 1s to {longest} (STREAMER_TOKEN_MAX_TTL), e.g. 15m"
    if not isinstance(value, str):
        raise _Bad("ttl", message)
    try:
        seconds = parse_seconds(value)
    except (ValueError, OverflowError):
        raise _Bad("ttl", message) from None
    if not MIN_TTL <= seconds <= longest.seconds:
        raise _Bad("ttl", message)
    return seconds


def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def mint_token(request: Request, gate: AccessGate, settings: StreamerSettings) -> JSONResponse:
    """Answer one ``POST /v1/tokens`` (see the module docstring)."""
    principal = request.scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):  # the gate always sets one on /v1; refuse rather than guess
        return problem(401, "unauthorized", "an API key is required", {"WWW-Authenticate": "Bearer"})
    if principal.kind not in ("key", "open"):
        gate.refused("forbidden")
        return problem(403, "forbidden", "tokens are minted with an API key (X-API-Key or Bearer), not with a token")
    try:
        body = await _body(request)
        asked = _asked_scope(body.get("series"))
        ttl = _ttl(body.get("ttl"), settings)
    except _Bad as bad:
        return bad_parameter(bad.parameter, str(bad))
    allowed = principal.scopes[0] if principal.kind == "key" else ALL
    wider = allowed.first_wider(asked) if asked is not None else None
    if wider is not None:
        gate.refused("forbidden")
        message = f"the key may not grant {wider!r}: a token's series fit in the key's ({allowed})"
        return problem(403, "forbidden", message, series=wider)
    try:
        minted = gate.tokens.mint(principal.client_id or ANONYMOUS, asked or allowed, ttl)
    except TokenRejected as error:
        return problem(503, "tokens_unavailable", str(error), {"Retry-After": "5"})
    body = {
        "token": minted.token,
        "expiresAt": _rfc3339(minted.expires_at),
        "series": minted.scope.claim(),
        "tokenType": "Bearer",
    }
    return JSONResponse(body, status_code=201, headers={"Cache-Control": "no-store"})
