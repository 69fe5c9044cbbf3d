"""Identity-provider JWTs: RS256 and ES256 with keys made here, a JWKS that rotates, fails, and is never HMAC."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pulsestream_streamer.access.idp import NOTHING, IdpTokens, UnknownSigningKey, client_id
from pulsestream_streamer.access.jwks import JwksError, JwksSource, parse_jwks
from pulsestream_streamer.access.scopes import Scope
from pulsestream_streamer.access.tokens import TokenRejected

ISSUER = "https://idp.example/realms/ops"
AUDIENCE = "pulsestream"
NOW = 1_800_000_000


class Signer:
    """A provider's key pair: its JWK (public) and tokens signed with its private half."""

    def __init__(self, kid: str, kind: str) -> None:
        self.kid = kid
        self.algorithm = "RS256" if kind == "rsa" else "ES256"
        self.private = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "rsa"
            else ec.generate_private_key(ec.SECP256R1())
        )
        algorithm = jwt.algorithms.RSAAlgorithm if kind == "rsa" else jwt.algorithms.ECAlgorithm
        self.jwk = {**json.loads(algorithm.to_jwk(self.private.public_key())), "kid": kid, "use": "sig"}

    def token(self, **claims: Any) -> str:
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@example.com", "exp": NOW + 300, "iat": NOW, **claims}
        return jwt.encode(body, self.private, algorithm=self.algorithm, headers={"kid": self.kid})


def jwks(*signers: Signer, extra: list[dict[str, Any]] | None = None) -> bytes:
    return json.dumps({"keys": [s.jwk for s in signers] + (extra or [])}).encode()


class Provider:
    """A scripted JWKS endpoint: what it answers now, and how often it was asked."""

    def __init__(self, document: bytes) -> None:
        self.document: bytes | Exception = document
        self.calls = 0

    async def fetch(self) -> bytes:
        self.calls += 1
        if isinstance(self.document, Exception):
            raise self.document
        return self.document


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rsa_key() -> Signer:
    return Signer("rsa-1", "rsa")


@pytest.fixture(scope="module")
def ec_key() -> Signer:
    return Signer("ec-1", "ec")


def idp(source: JwksSource, leeway: float = 30) -> IdpTokens:
    return IdpTokens(source, ISSUER, AUDIENCE, leeway=leeway, clock=lambda: NOW)


def verify(tokens: IdpTokens, token: str) -> Any:
    return tokens.verify(token, jwt.get_unverified_header(token))


async def test_rs256_and_es256_tokens_grant_their_series_claim(rsa_key: Signer, ec_key: Signer) -> None:
    provider = Provider(jwks(rsa_key, ec_key))
    source = JwksSource("https://idp.example/certs", fetch=provider.fetch)
    assert await source.refresh()
    tokens = idp(source)
    claims = verify(tokens, rsa_key.token(series=["cpu", "checkout.*"]))
    assert claims.scope == Scope(("cpu", "checkout.*")) and claims.client_id == client_id(ISSUER, "alice@example.com")
    assert "alice" not in claims.client_id
    assert verify(tokens, ec_key.token(series="cpu memory")).scope == Scope(("cpu", "memory"))
    assert verify(tokens, ec_key.token()).scope == NOTHING  # no claim: authenticated, but no series


@pytest.mark.parametrize(
    ("claims", "says"),
    [
        ({"aud": "another-service"}, "audience"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"exp": NOW - 31}, "expired"),
        ({"nbf": NOW + 60}, "not valid yet"),
        ({"sub": None}, "sub"),
        ({"series": [1, 2]}, "series"),
    ],
)
async def test_tokens_for_another_audience_issuer_or_time_are_refused(
    rsa_key: Signer, claims: dict[str, Any], says: str
) -> None:
    source = JwksSource("https://idp.example/certs", fetch=Provider(jwks(rsa_key)).fetch)
    await source.refresh()
    token = rsa_key.token(**{k: v for k, v in claims.items() if v is not None})
    if claims.get("sub", "") is None:
        body = jwt.decode(token, options={"verify_signature": False})
        del body["sub"]
        token = jwt.encode(body, rsa_key.private, algorithm="RS256", headers={"kid": rsa_key.kid})
    with pytest.raises(TokenRejected, match=says) as refused:
        verify(idp(source), token)
    assert token not in str(refused.value)


async def test_the_leeway_forgives_a_little_clock_skew(rsa_key: Signer) -> None:
    source = JwksSource("https://idp.example/certs", fetch=Provider(jwks(rsa_key)).fetch)
    await source.refresh()
    assert verify(idp(source), rsa_key.token(exp=NOW - 10, series=["cpu"])).scope == Scope(("cpu",))
    with pytest.raises(TokenRejected, match="expired"):
        verify(idp(source, leeway=0), rsa_key.token(exp=NOW - 10))


async def test_a_token_signed_by_another_key_with_a_listed_kid_is_forged(rsa_key: Signer) -> None:
    impostor = Signer(rsa_key.kid, "rsa")
    source = JwksSource("https://idp.example/certs", fetch=Provider(jwks(rsa_key)).fetch)
    await source.refresh()
    with pytest.raises(TokenRejected, match="signature"):
        verify(idp(source), impostor.token(series=["**"]))


async def test_hmac_with_the_public_key_and_alg_none_are_refused(rsa_key: Signer) -> None:
    source = JwksSource("https://idp.example/certs", fetch=Provider(jwks(rsa_key)).fetch)
    await source.refresh()
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": NOW + 60, "series": ["**"]}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": rsa_key.kid})  # type: ignore[arg-type]
    with pytest.raises(TokenRejected, match="algorithm"):
        verify(idp(source), unsigned)
    # An oct key in a JWKS is never used: a public document cannot become an HMAC secret.
    oct_key = {"kty": "oct", "kid": "shared", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTAwMDE", "alg": "HS256"}
    assert set(parse_jwks(jwks(rsa_key, extra=[oct_key]))) == {rsa_key.kid}
    with pytest.raises(JwksError, match="no usable"):
        parse_jwks(json.dumps({"keys": [oct_key]}).encode())


async def test_an_unknown_kid_fetches_the_set_once_and_a_rotated_key_is_then_accepted(
    rsa_key: Signer, ec_key: Signer
) -> None:
    provider = Provider(jwks(rsa_key))
    clock = Clock()
    source = JwksSource("https://idp.example/certs", refresh=300, fetch=provider.fetch, clock=clock)
    await source.refresh()
    tokens = idp(source)
    rotated = ec_key.token(series=["cpu"])
    with pytest.raises(UnknownSigningKey) as unknown:
        verify(tokens, rotated)
    provider.document = jwks(rsa_key, ec_key)  # the provider rotates in a new key
    clock.now = 11.0  # past the minimum interval since the start-up fetch
    assert await source.ensure(unknown.value.kid)
    assert verify(tokens, rotated).scope == Scope(("cpu",))
    # Made-up kids cannot make the streamer hammer the provider: one fetch per minimum interval.
    calls = provider.calls
    for n in range(20):
        assert not await source.ensure(f"made-up-{n}")
    assert provider.calls == calls, "the fetch that found the rotated key was a moment ago"
    clock.now += 10.0
    for n in range(20):
        assert not await source.ensure(f"made-up-again-{n}")
    assert provider.calls == calls + 1


@pytest.mark.parametrize(
    "failure",
    [JwksError("HTTP 503 from https://idp.example/certs"), b"not json", b'{"keys": []}', b'{"nokeys": 1}'],
    ids=["unreachable", "not-json", "empty", "not-a-jwks"],
)
async def test_a_failing_fetch_keeps_the_last_good_keys_and_says_so(rsa_key: Signer, failure: Any) -> None:
    provider = Provider(jwks(rsa_key))
    source = JwksSource("https://user:pw@idp.example/certs?x=1", fetch=provider.fetch)
    assert await source.refresh()
    provider.document = failure
    assert not await source.refresh()
    state = source.state()
    assert state["keys"] == 1 and state["error"] and state["last_success"] and state["last_fetch"]
    assert state["source"] == "https://idp.example/certs", "no user info or query in /health"
    assert verify(idp(source), rsa_key.token(series=["cpu"])).scope == Scope(("cpu",))
    provider.document = jwks(rsa_key)
    assert await source.refresh() and source.state()["error"] is None


async def test_a_jwks_file_is_reread_when_it_changes(tmp_path: Path, rsa_key: Signer, ec_key: Signer) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(rsa_key))
    source = JwksSource(str(path))
    assert await source.refresh() and set(source.keys) == {"rsa-1"}
    assert await source.refresh()  # unchanged: still good
    path.write_text("{broken")
    assert not await source.refresh() and set(source.keys) == {"rsa-1"}
    assert not await source.refresh(), "an unchanged bad file stays an error"
    path.write_bytes(jwks(rsa_key, ec_key))
    assert await source.refresh() and set(source.keys) == {"rsa-1", "ec-1"}
    path.unlink()
    assert not await source.refresh() and "cannot read" in str(source.state()["error"])


async def test_a_set_of_one_key_fits_a_token_without_kid(rsa_key: Signer) -> None:
    source = JwksSource("https://idp.example/certs", fetch=Provider(jwks(rsa_key)).fetch)
    await source.refresh()
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bot", "exp": NOW + 60, "series": ["cpu"]}
    token = jwt.encode(body, rsa_key.private, algorithm="RS256")
    assert verify(idp(source), token).scope == Scope(("cpu",))
