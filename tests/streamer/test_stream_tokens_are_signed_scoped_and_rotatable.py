"""Stream tokens: minted for a key, verified only with a secret in force, before expiry plus leeway, never wider."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jwt
import pytest
from pulsestream_streamer.access.clientid import key_id
from pulsestream_streamer.access.keys import KeyStore
from pulsestream_streamer.access.principal import Authenticator, Credential, Unauthenticated
from pulsestream_streamer.access.scopes import ALL, Scope
from pulsestream_streamer.access.tokens import AUDIENCE, ISSUER, TokenRejected, Tokens, TokenSecrets, kid_of

SECRET = "a-token-secret-of-at-least-32-bytes-0001"
OTHER = "another-secret-of-at-least-32-bytes-0002"
KEY = "the-api-key-0001"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def secret_file(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n")
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(tmp_path: Path, clock: Clock) -> Tokens:
    return Tokens(TokenSecrets(secret_file(tmp_path, "secret", SECRET)), leeway=30, clock=clock)


def payload(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def test_a_minted_token_names_its_key_by_id_only_and_carries_its_scope(tokens: Tokens, clock: Clock) -> None:
    minted = tokens.mint(key_id(KEY), Scope(("cpu", "mem*")), ttl=900)
    claims = payload(minted.token)
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
    assert claims["sub"] == key_id(KEY) and KEY not in minted.token
    assert claims["series"] == ["cpu", "mem*"] and claims["exp"] == minted.expires_at == int(clock.now) + 900
    header = jwt.get_unverified_header(minted.token)
    assert header == {"alg": "HS256", "typ": "JWT", "kid": kid_of(SECRET.encode())}
    verified = tokens.verify(minted.token, header)
    assert verified.subject == key_id(KEY) and verified.scope == Scope(("cpu", "mem*"))
    assert payload(tokens.mint("key-x", ALL, 60).token)["series"] == ["**"]


def test_expiry_counts_only_past_the_leeway(tokens: Tokens, clock: Clock) -> None:
    minted = tokens.mint("key-x", ALL, ttl=60)
    header = jwt.get_unverified_header(minted.token)
    clock.now += 60 + 29
    assert tokens.verify(minted.token, header).subject == "key-x"
    clock.now += 2
    with pytest.raises(TokenRejected, match="expired"):
        tokens.verify(minted.token, header)


def test_a_token_from_the_future_is_refused_beyond_the_leeway(tmp_path: Path, clock: Clock) -> None:
    ahead = Tokens(TokenSecrets(secret_file(tmp_path, "s", SECRET)), leeway=30, clock=Clock(clock.now + 120))
    token = ahead.mint("key-x", ALL, ttl=600).token
    verifier = Tokens(TokenSecrets(secret_file(tmp_path, "s", SECRET)), leeway=30, clock=clock)
    with pytest.raises(TokenRejected, match="not valid yet"):
        verifier.verify(token, jwt.get_unverified_header(token))


@pytest.mark.parametrize(
    "forge",
    [
        lambda claims, now: jwt.encode(claims, OTHER, algorithm="HS256", headers={"kid": kid_of(SECRET.encode())}),
        lambda claims, now: jwt.encode({**claims, "aud": "someone-else"}, SECRET, algorithm="HS256"),
        lambda claims, now: jwt.encode({**claims, "iss": "evil"}, SECRET, algorithm="HS256"),
        lambda claims, now: jwt.encode({k: v for k, v in claims.items() if k != "exp"}, SECRET, algorithm="HS256"),
        lambda claims, now: jwt.encode({**claims, "series": "cpu?"}, SECRET, algorithm="HS256"),
        lambda claims, now: jwt.encode(claims, SECRET * 2, algorithm="HS512"),
        lambda claims, now: jwt.encode(claims, None, algorithm="none"),  # type: ignore[arg-type]
    ],
    ids=["other-secret", "audience", "issuer", "no-exp", "bad-series", "hs512", "alg-none"],
)
def test_forged_or_foreign_tokens_are_refused(tokens: Tokens, clock: Clock, forge: object) -> None:
    now = int(clock.now)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "key-x", "iat": now, "exp": now + 600, "series": ["**"]}
    token = forge(claims, now)  # type: ignore[operator]
    with pytest.raises(TokenRejected) as refused:
        tokens.verify(token, jwt.get_unverified_header(token))
    assert token not in str(refused.value)


def test_rotation_the_previous_secret_verifies_until_it_is_emptied(tmp_path: Path, clock: Clock) -> None:
    current = secret_file(tmp_path, "current", SECRET)
    previous = secret_file(tmp_path, "previous", "")
    secrets = TokenSecrets(current, previous)
    tokens = Tokens(secrets, clock=clock)
    old = tokens.mint("key-x", ALL, 600).token
    # Rotate: the new secret signs, the old one moves to the previous file.
    current.write_text(OTHER)
    previous.write_text(SECRET)
    assert secrets.reload()
    new = tokens.mint("key-x", ALL, 600).token
    assert jwt.get_unverified_header(new)["kid"] == kid_of(OTHER.encode())
    for token in (old, new):
        assert tokens.verify(token, jwt.get_unverified_header(token)).subject == "key-x"
    previous.write_text("")
    assert secrets.reload()
    assert tokens.verify(new, jwt.get_unverified_header(new)).subject == "key-x"
    with pytest.raises(TokenRejected):
        tokens.verify(old, jwt.get_unverified_header(old))


def test_a_short_or_missing_secret_file_is_refused_and_the_last_good_secret_stays(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "secret", "too-short")
    secrets = TokenSecrets(path)
    assert secrets.signing() is None and secrets.error is not None and "too-short" not in secrets.error
    with pytest.raises(TokenRejected) as refused:
        Tokens(secrets).mint("key-x", ALL, 60)
    assert refused.value.reason == "unavailable"
    path.write_text(SECRET)
    secrets.reload()
    assert secrets.signing() == SECRET.encode() and secrets.error is None
    path.unlink()
    secrets.reload()
    assert secrets.signing() == SECRET.encode() and secrets.error is not None and "cannot read" in secrets.error


def test_a_missing_previous_secret_file_is_no_rotation_not_an_error(tmp_path: Path) -> None:
    secrets = TokenSecrets(secret_file(tmp_path, "current", SECRET), tmp_path / "absent")
    assert secrets.error is None and list(secrets.verifying().values()) == [SECRET.encode()]


def test_without_a_secret_file_a_random_secret_serves_this_process() -> None:
    first, second = TokenSecrets(), TokenSecrets()
    assert not first.configured and first.signing() and first.signing() != second.signing()
    token = Tokens(first).mint("key-x", ALL, 60).token
    with pytest.raises(TokenRejected):
        Tokens(second).verify(token, jwt.get_unverified_header(token))


# --- the principal a token stands for ------------------------------------------------------------


def authenticator(tmp_path: Path, keys: str, clock: Clock) -> tuple[Authenticator, Path]:
    path = tmp_path / "keys"
    path.write_text(keys)
    store = KeyStore(key_file=path)
    return Authenticator(store, Tokens(TokenSecrets(secret_file(tmp_path, "s", SECRET)), clock=clock)), path


def test_a_token_counts_as_its_key_and_reads_what_both_allow(tmp_path: Path, clock: Clock) -> None:
    auth, path = authenticator(tmp_path, f"{KEY} series=cpu,mem*\n", clock)
    key = auth.authenticate(Credential(KEY, "header"))
    assert key.kind == "key" and key.client_id == key_id(KEY)
    token = auth.tokens.mint(key_id(KEY), Scope(("memory", "cpu")), 600).token
    for where in ("access_token", "bearer"):
        principal = auth.authenticate(Credential(token, where))  # type: ignore[arg-type]
        assert principal.kind == "token" and principal.client_id == key.client_id
        assert principal.allows("memory") and principal.allows("cpu") and not principal.allows("mem2")
    # The key is narrowed in the file: its tokens narrow with it at their next request.
    path.write_text(f"{KEY} series=memory\n")
    auth.keys.reload()
    narrowed = auth.authenticate(Credential(token, "access_token"))
    assert narrowed.allows("memory") and not narrowed.allows("cpu")
    # The key is removed: its tokens are refused.
    path.write_text("another-key\n")
    auth.keys.reload()
    with pytest.raises(Unauthenticated, match="no longer accepted"):
        auth.authenticate(Credential(token, "access_token"))


@pytest.mark.parametrize(
    ("credential", "says"),
    [
        (None, "required"),
        (Credential("wrong-key", "header"), "API key is not valid"),
        (Credential("wrong-key", "bearer"), "API key is not valid"),
        (Credential("not-a-jwt", "access_token"), "malformed"),
        (Credential("eyJhbGciOiJIUzI1NiJ9.eyJ.x", "access_token"), "malformed"),
        (Credential("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "access_token"), "identity provider"),
    ],
)
def test_what_is_refused_says_why_and_never_repeats_the_credential(
    tmp_path: Path, clock: Clock, credential: Credential | None, says: str
) -> None:
    auth, _ = authenticator(tmp_path, f"{KEY}\n", clock)
    with pytest.raises(Unauthenticated) as refused:
        auth.authenticate(credential)
    assert says in str(refused.value)
    if credential is not None:
        assert credential.value not in str(refused.value)
        assert refused.value.reason == "invalid_token"
    else:
        assert refused.value.reason == "missing"
