"""Scopes, stream tokens and identity-provider JWTs on a real streamer in front of a real generator (issue 17).

The streamer's keys come from a file (one scoped, one not), its token secrets from files that rotate, and its
identity provider is a JWKS served over TLS on loopback by keys made here (RS256 and ES256), which rotates and
fails mid-test. The last test scans the whole debug log (access log on) for every key, token and secret used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from identity_provider import AUDIENCE, ISSUER, Provider, SigningKey
from loopback import wait_for
from services import Stack, StreamerProcess

pytestmark = pytest.mark.e2e

SCOPED = "scoped-key-0001"  # series=cpu,mem*
WIDE = "wide-key-0002"
SECRET_A = "token-secret-a-0123456789abcdef0123456789"
SECRET_B = "token-secret-b-0123456789abcdef0123456789"
GENEROUS = {"rateLimit": {"requestsPerSecond": 200, "burst": 200, "maxStreamsPerClient": 8}}
#: Every credential the tests present: none may appear in the streamer's log.
PRESENTED: set[str] = {SCOPED, WIDE, SECRET_A, SECRET_B}


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    idp = Provider(tmp_path_factory.mktemp("idp"))
    idp.keys = [SigningKey("rsa-1", "rsa"), SigningKey("ec-1", "ec")]
    idp.start()
    try:
        yield idp
    finally:
        idp.stop()


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("secrets")
    (directory / "api-keys").write_text(f"{SCOPED} series=cpu,mem*\n{WIDE}\n")
    (directory / "token-secret").write_text(SECRET_A + "\n")
    (directory / "token-previous-secret").write_text("")
    return directory


@pytest.fixture(scope="module")
def streamer(module_stack: Stack, provider: Provider, secrets_dir: Path) -> StreamerProcess:
    generator = module_stack.generator({"frequency": "100ms"})
    return module_stack.streamer(
        generator,
        GENEROUS,
        STREAMER_API_KEYS_FILE=str(secrets_dir / "api-keys"),
        STREAMER_TOKEN_SECRET_FILE=str(secrets_dir / "token-secret"),
        STREAMER_TOKEN_PREVIOUS_SECRET_FILE=str(secrets_dir / "token-previous-secret"),
        STREAMER_TOKEN_LEEWAY="0s",
        STREAMER_JWT_JWKS_URL=provider.url,
        STREAMER_JWT_JWKS_CA_FILE=str(provider.ca),
        STREAMER_JWT_ISSUER=ISSUER,
        STREAMER_JWT_AUDIENCE=AUDIENCE,
        STREAMER_JWT_JWKS_REFRESH="1s",
        LOG_LEVEL="debug",
    )


def replace(path: Path, text: str) -> None:
    """Swap a file's content atomically, as kubelet does with a Secret."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def get(streamer: StreamerProcess, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(streamer.url + path, timeout=10.0, **kwargs)


def mint(streamer: StreamerProcess, key: str, **body: Any) -> httpx.Response:
    return httpx.post(streamer.url + "/v1/tokens", headers={"X-API-Key": key}, json=body or None, timeout=10.0)


def token_of(streamer: StreamerProcess, key: str, **body: Any) -> str:
    reply = mint(streamer, key, **body)
    assert reply.status_code == 201, reply.text
    token = str(reply.json()["token"])
    PRESENTED.add(token)
    return token


def names(reply: httpx.Response) -> list[str]:
    assert reply.status_code == 200, reply.text
    return sorted(entry["name"] for entry in reply.json())


def stream_status(streamer: StreamerProcess, **params: str) -> tuple[int, dict[str, Any]]:
    """Open a stream and return its status, and the error body (or the snapshot's meta) without waiting long."""
    with httpx.stream("GET", streamer.url + "/v1/stream", params=params, timeout=10.0) as reply:
        if reply.status_code != 200:
            reply.read()
            return reply.status_code, reply.json()
        for line in reply.iter_lines():
            if line.startswith("data:") and '"meta"' in line:
                return 200, json.loads(line[5:])["meta"]
    raise AssertionError("the stream ended before its snapshot")


def test_a_scoped_key_lists_and_streams_only_its_series(streamer: StreamerProcess) -> None:
    assert names(get(streamer, "/v1/series", headers={"X-API-Key": SCOPED})) == ["cpu", "memory"]
    assert names(get(streamer, "/v1/series", headers={"X-API-Key": WIDE})) == ["cpu", "latency", "memory", "requests"]
    status, error = stream_status(streamer, series="cpu,latency", api_key=SCOPED)
    assert status == 403 and error["error"]["code"] == "forbidden" and error["error"]["series"] == "latency"
    assert SCOPED not in str(error)
    # Even an unknown name outside the scope is a 403, not a 400 listing the series the key may not see.
    status, error = stream_status(streamer, series="nosuch", api_key=SCOPED)
    assert status == 403 and "latency" not in str(error)
    status, meta = stream_status(streamer, api_key=SCOPED)  # no series=: every series in scope
    assert status == 200 and sorted(s["name"] for s in meta["series"]) == ["cpu", "memory"], meta


def test_a_token_streams_by_query_or_bearer_within_its_key_s_scope(streamer: StreamerProcess) -> None:
    token = token_of(streamer, SCOPED, series=["cpu"])
    assert names(get(streamer, "/v1/series", params={"access_token": token})) == ["cpu"]
    assert stream_status(streamer, series="cpu", access_token=token)[0] == 200
    with httpx.stream(
        "GET", streamer.url + "/v1/stream?series=cpu", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as reply:
        assert reply.status_code == 200
    status, error = stream_status(streamer, series="memory", access_token=token)
    assert (status, error["error"]["series"]) == (403, "memory")
    wider = mint(streamer, SCOPED, series=["requests"])
    assert wider.status_code == 403 and wider.json()["error"] == {
        "code": "forbidden",
        "message": "the key may not grant 'requests': a token's series fit in the key's (cpu,mem*)",
        "series": "requests",
    }
    assert mint(streamer, "not-a-key").status_code == 401
    assert httpx.post(streamer.url + "/v1/tokens", params={"access_token": token}, timeout=10).status_code == 403


def test_an_open_stream_outlives_its_token_and_a_reconnect_needs_a_valid_one(streamer: StreamerProcess) -> None:
    token = token_of(streamer, WIDE, series=["cpu"], ttl="2s")
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    points_after_expiry = 0
    with httpx.stream("GET", streamer.url + "/v1/stream", params={"series": "cpu", "access_token": token}) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line.startswith("event: points") and time.time() > expires + 1:
                points_after_expiry += 1
                if points_after_expiry >= 5:
                    break
    assert points_after_expiry >= 5, "the stream was not cut when its token expired"
    refused = get(streamer, "/v1/stream", params={"series": "cpu", "access_token": token})
    assert refused.status_code == 401 and "expired" in refused.json()["error"]["message"]
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert token not in refused.text and token not in refused.headers["www-authenticate"]


def test_token_secrets_rotate_with_the_previous_one_accepted_until_it_is_emptied(
    streamer: StreamerProcess, secrets_dir: Path
) -> None:
    old = token_of(streamer, WIDE)
    replace(secrets_dir / "token-previous-secret", SECRET_A + "\n")
    replace(secrets_dir / "token-secret", SECRET_B + "\n")
    old_kid = jwt.get_unverified_header(old)["kid"]
    wait_for(lambda: jwt.get_unverified_header(token_of(streamer, WIDE))["kid"] != old_kid, what="the new secret")
    new = token_of(streamer, WIDE)
    for token in (old, new):
        assert get(streamer, "/v1/series", params={"access_token": token}).status_code == 200
    replace(secrets_dir / "token-previous-secret", "")
    wait_for(lambda: get(streamer, "/v1/series", params={"access_token": old}).status_code == 401, what="old out")
    assert get(streamer, "/v1/series", params={"access_token": new}).status_code == 200


def test_removing_a_key_revokes_its_tokens(streamer: StreamerProcess, secrets_dir: Path) -> None:
    token = token_of(streamer, SCOPED)
    assert get(streamer, "/v1/series", params={"access_token": token}).status_code == 200
    replace(secrets_dir / "api-keys", f"{WIDE}\n")
    try:
        wait_for(lambda: get(streamer, "/v1/series", params={"access_token": token}).status_code == 401, what="revoke")
        assert "no longer accepted" in get(streamer, "/v1/series", params={"access_token": token}).text
    finally:
        replace(secrets_dir / "api-keys", f"{SCOPED} series=cpu,mem*\n{WIDE}\n")
    wait_for(lambda: get(streamer, "/v1/series", params={"access_token": token}).status_code == 200, what="back")


def test_provider_tokens_rs256_and_es256_grant_their_series_claim(
    streamer: StreamerProcess, provider: Provider
) -> None:
    rsa_key, ec_key = provider.keys
    wait_for(lambda: streamer.health().get("jwks", {}).get("keys") == 2, what="the JWKS fetched")
    for key, claim in ((rsa_key, ["cpu", "latency"]), (ec_key, "cpu latency")):
        token = key.token(series=claim)
        PRESENTED.add(token)
        assert names(get(streamer, "/v1/series", headers={"Authorization": f"Bearer {token}"})) == ["cpu", "latency"]
        assert stream_status(streamer, series="latency", access_token=token)[0] == 200
        assert stream_status(streamer, series="memory", access_token=token)[0] == 403
    no_claim = rsa_key.token()
    assert names(get(streamer, "/v1/series", headers={"Authorization": f"Bearer {no_claim}"})) == []


def hmac_with_public_key(key: SigningKey) -> str:
    """The provider's public key (PEM) as an HMAC secret: the classic algorithm confusion (by hand: PyJWT refuses)."""
    public = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def part(document: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=")

    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": 4_000_000_000, "series": ["**"]}
    signing_input = part({"alg": "HS256", "typ": "JWT", "kid": key.kid}) + b"." + part(claims)
    signature = base64.urlsafe_b64encode(hmac.new(public, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


@pytest.mark.parametrize(
    "case", ["wrong-audience", "wrong-issuer", "expired", "forged", "malformed", "hs256-with-public-key"]
)
def test_bad_provider_tokens_get_401_that_never_repeats_them(
    streamer: StreamerProcess, provider: Provider, case: str
) -> None:
    rsa_key = provider.keys[0]
    if case == "wrong-audience":
        token = rsa_key.token(aud="another-service", series=["cpu"])
    elif case == "wrong-issuer":
        token = rsa_key.token(iss="https://evil.test", series=["cpu"])
    elif case == "expired":
        token = rsa_key.token(ttl=-5, series=["cpu"])
    elif case == "forged":
        token = SigningKey(rsa_key.kid, "rsa").token(series=["**"])
    elif case == "malformed":
        token = rsa_key.token(series=["cpu"])[:-20] + "!!"
    else:
        token = hmac_with_public_key(rsa_key)
    PRESENTED.add(token)
    refused = get(streamer, "/v1/stream", params={"series": "cpu", "access_token": token})
    assert refused.status_code == 401, refused.text
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json()["error"]["code"] == "unauthorized"
    assert token not in refused.text and token.split(".")[-1] not in refused.text


def test_a_provider_key_rotated_mid_test_is_accepted_and_a_failing_jwks_keeps_the_last_good_keys(
    streamer: StreamerProcess, provider: Provider
) -> None:
    rotated = SigningKey("rsa-2", "rsa")
    provider.keys = [*provider.keys, rotated]
    token = rotated.token(series=["cpu"])
    PRESENTED.add(token)
    # The first request with the new kid fetches the set again (no waiting for the periodic refresh).
    wait_for(lambda: get(streamer, "/v1/series", params={"access_token": token}).status_code == 200, 15, "rsa-2")

    provider.failing = True
    wait_for(lambda: streamer.health()["jwks"]["error"], 15, "the JWKS error in /health")
    state = streamer.health()["jwks"]
    assert state["keys"] == 3 and "503" in state["error"] and state["last_success"], state
    assert state["source"] == provider.url
    assert streamer.health()["status"] == "ok", "the provider's trouble does not fail the probe"
    assert get(streamer, "/v1/series", params={"access_token": token}).status_code == 200, "last good keys stay"
    provider.failing = False
    wait_for(lambda: streamer.health()["jwks"]["error"] is None, 15, "the JWKS error to clear")


def test_no_key_token_or_secret_ever_appears_in_the_log(streamer: StreamerProcess) -> None:
    logs = streamer.log_text()
    assert "access_token=<redacted>" in logs, "the access log saw tokens in URLs, so a leak would have shown"
    assert len(PRESENTED) > 10
    leaked = [secret[:12] + "..." for secret in PRESENTED if secret in logs]
    assert not leaked, leaked
    for token in PRESENTED:
        if token.count(".") == 2:  # no part of a token's payload or signature either
            assert token.split(".")[2][:16] not in logs
