"""The gate with tokens, in front of a minimal app, and ``POST /v1/tokens`` on the real app (no upstream needed)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pulsestream_streamer.access.clientid import ClientIdentifier, key_id
from pulsestream_streamer.access.gate import AccessGate, AccessMiddleware
from pulsestream_streamer.access.idp import IdpTokens
from pulsestream_streamer.access.jwks import JwksSource
from pulsestream_streamer.access.keys import KeyStore
from pulsestream_streamer.access.ratelimit import RateLimiter
from pulsestream_streamer.access.scopes import ALL
from pulsestream_streamer.http.app import create_app
from pulsestream_streamer.settings import StreamerSettings
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from pulsestream.spec import RateLimit

KEY = "gate-key-0001"
SECRET = "gate-token-secret-at-least-32-bytes-long"
seen: list[dict[str, Any]] = []


async def app(scope: AsgiScope, receive: Receive, send: Send) -> None:
    seen.append(dict(scope.get("state", {})))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def gate(burst: int = 100, streams: int = 4, idp: IdpTokens | None = None) -> AccessGate:
    limits = RateLimit(requests_per_second=0.001, burst=burst, max_streams_per_client=streams)
    return AccessGate(KeyStore((KEY,)), ClientIdentifier(), RateLimiter(limits), idp=idp)


def client(guard: AccessGate) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=AccessMiddleware(app, guard), client=("203.0.113.1", 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://streamer")


async def test_a_refused_token_gets_an_rfc_6750_challenge_and_a_body_that_does_not_repeat_it() -> None:
    guard = gate()
    expired = guard.tokens.mint(key_id(KEY), ALL, ttl=1)
    guard.tokens._clock = lambda: expired.expires_at + 3600  # an hour later
    async with client(guard) as http:
        refused = await http.get("/v1/stream", params={"access_token": expired.token})
        forged = await http.get("/v1/series", headers={"Authorization": f"Bearer {expired.token[:-4]}AAAA"})
        missing = await http.get("/v1/series")
    assert refused.status_code == forged.status_code == missing.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized" and "expired" in refused.json()["error"]["message"]
    assert expired.token not in refused.text and expired.token[:-4] not in forged.text
    challenge = refused.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="pulsestream", error="invalid_token", error_description="')
    assert expired.token not in challenge
    assert missing.headers["www-authenticate"] == 'Bearer realm="pulsestream"'


async def test_a_token_counts_as_its_key_for_the_rate_limit_and_the_stream_cap() -> None:
    guard = gate(burst=3, streams=1)
    token = guard.tokens.mint(key_id(KEY), ALL, ttl=600).token
    seen.clear()
    async with client(guard) as http:
        assert (await http.get("/v1/series", headers={"X-API-Key": KEY})).status_code == 200
        assert (await http.get("/v1/series", params={"access_token": token})).status_code == 200
        assert (await http.get("/v1/series", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        assert (await http.get("/v1/series", params={"access_token": token})).status_code == 429
    assert {state["client_id"] for state in seen} == {key_id(KEY)}
    assert [state["principal"].kind for state in seen] == ["key", "token", "token"]
    guard.limiter.configure(RateLimit(requests_per_second=0.001, burst=100, max_streams_per_client=1))
    guard.limiter.open_stream(key_id(KEY))  # the key holds its one stream
    async with client(guard) as http:
        capped = await http.get("/v1/stream", params={"access_token": token})
    assert capped.status_code == 429 and capped.json()["error"]["code"] == "too_many_streams"


async def test_a_provider_token_with_a_new_kid_makes_the_gate_fetch_the_jwks_again() -> None:
    old, new = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))

    def jwk(private: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
        return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key())), "kid": kid}

    served = {"keys": [jwk(old, "old")]}
    calls = []

    async def fetch() -> bytes:
        calls.append(1)
        return json.dumps(served).encode()

    source = JwksSource("https://idp.example/certs", fetch=fetch, refresh=1.0)  # min interval 1 s
    await source.refresh()
    guard = gate(idp=IdpTokens(source, "https://idp.example", "streamer"))
    claims = {"iss": "https://idp.example", "aud": "streamer", "sub": "bob", "exp": 4_000_000_000, "series": "cpu"}
    token = jwt.encode(claims, new, algorithm="RS256", headers={"kid": "new"})
    served["keys"].append(jwk(new, "new"))
    source._attempted = -10.0  # the start-up fetch was long enough ago
    seen.clear()
    async with client(guard) as http:
        accepted = await http.get("/v1/series", headers={"Authorization": f"Bearer {token}"})
    assert accepted.status_code == 200 and len(calls) == 2
    principal = seen[-1]["principal"]
    assert principal.kind == "jwt" and principal.allows("cpu") and not principal.allows("memory")


# --- POST /v1/tokens on the real app ---------------------------------------------------------------


@pytest.fixture
async def streamer(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY} series=cpu,mem*\nwide-key-0001\n")
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    settings = StreamerSettings.from_env(
        {
            "STREAMER_API_KEYS_FILE": str(keys),
            "STREAMER_TOKEN_SECRET_FILE": str(secret),
            "STREAMER_TOKEN_MAX_TTL": "1h",
            "STREAMER_RATE_LIMIT_REQUESTS_PER_SECOND": "100",
            "STREAMER_RATE_LIMIT_BURST": "100",
            "PULSESTREAM_SETTINGS_FILE": "",
        }
    )
    transport = httpx.ASGITransport(app=create_app(settings), client=("203.0.113.9", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://streamer") as http:
        yield http


async def test_a_key_mints_a_token_within_its_scope(streamer: httpx.AsyncClient) -> None:
    reply = await streamer.post("/v1/tokens", headers={"X-API-Key": KEY})
    assert reply.status_code == 201 and reply.headers["cache-control"] == "no-store"
    body = reply.json()
    assert body["series"] == ["cpu", "mem*"] and body["tokenType"] == "Bearer" and body["expiresAt"].endswith("Z")
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 15 * 60 and claims["sub"] == key_id(KEY)
    narrow = await streamer.post("/v1/tokens", headers={"X-API-Key": KEY}, json={"series": ["memory"], "ttl": "90s"})
    assert narrow.status_code == 201 and narrow.json()["series"] == ["memory"]
    assert jwt.decode(narrow.json()["token"], options={"verify_signature": False})["exp"] - claims["iat"] <= 91
    wide = await streamer.post("/v1/tokens", headers={"Authorization": "Bearer wide-key-0001"})
    assert wide.status_code == 201 and wide.json()["series"] == ["**"]


@pytest.mark.parametrize(
    ("body", "status", "parameter"),
    [
        ({"series": ["m*"]}, 403, None),
        ({"series": ["**"]}, 403, None),
        ({"series": "cpu"}, 400, "series"),
        ({"series": ["cpu?"]}, 400, "series"),
        ({"ttl": "2h"}, 400, "ttl"),
        ({"ttl": "0s"}, 400, "ttl"),
        ({"ttl": 60}, 400, "ttl"),
        ({"scope": ["cpu"]}, 400, "scope"),
        ([1, 2], 400, "body"),
    ],
)
async def test_a_request_wider_than_the_key_or_malformed_is_refused_and_says_what(
    streamer: httpx.AsyncClient, body: Any, status: int, parameter: str | None
) -> None:
    reply = await streamer.post("/v1/tokens", headers={"X-API-Key": KEY}, json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    if status == 403:
        assert error["code"] == "forbidden" and error["series"] == body["series"][0]
    else:
        assert error["code"] == "bad_parameter" and error["parameter"] == parameter


async def test_only_a_key_mints_and_the_token_s_scope_applies_to_the_series_it_asks(
    streamer: httpx.AsyncClient,
) -> None:
    token = (await streamer.post("/v1/tokens", headers={"X-API-Key": KEY}, json={"series": ["cpu"]})).json()["token"]
    again = await streamer.post("/v1/tokens", headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 403 and again.json()["error"]["code"] == "forbidden"
    assert token not in again.text
    for series in ("memory", "cpu,memory"):
        refused = await streamer.get("/v1/stream", params={"series": series, "access_token": token})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == {
            "code": "forbidden",
            "message": "this credential may not read the series 'memory'",
            "series": "memory",
        }
