"""Short-lived stream tokens: minted for an API key, signed with a rotatable secret, checked on every request.

A browser's ``EventSource`` cannot send headers, so whatever authenticates it
travels in the URL, where proxies and browser history keep it. ``POST
/v1/tokens`` trades a long-lived API key (sent in a header) for a token that
expires in minutes and may be narrowed to a few series; only the token goes
into ``?access_token=``.

A token is a JWT (RFC 7519) signed with HS256:

- header ``{"alg": "HS256", "typ": "JWT", "kid": KID}``: ``KID`` is ``s-`` and 12 hex
  digits of a domain-separated SHA-256 of the secret, so a verifier picks the
  secret (current or previous) by id, and the id tells nothing of the secret;
- claims ``iss`` = :data:`ISSUER`, ``aud`` = :data:`AUDIENCE`, ``sub`` = the key's
  opaque id (``key-<16 hex>``, :func:`~.clientid.key_id`; never the key), ``iat``,
  ``exp``, a random ``jti``, and ``series``: the granted globs (``["**"]`` for every series).

Secrets come from ``STREAMER_TOKEN_SECRET_FILE`` (and, while rotating,
``STREAMER_TOKEN_PREVIOUS_SECRET_FILE``), re-read by content hash like the key
file: put the new secret in the current file and the old one in the previous
file, wait one longest TTL, then empty the previous file. Without a secret
file the streamer makes a random secret at start: tokens are then accepted by
the process that minted them only (fine on a laptop; replicas need the file).

Guarantees:

- A token verifies only with one of the secrets in force, only as HS256
  (``alg`` is never taken from the token: ``none`` and RS/ES confusion are
  refused), only with this issuer and audience, and only before ``exp`` plus
  the leeway. Its scope is what it says *and* what its key allows now: a key
  removed from the key file takes its tokens with it, a key narrowed narrows them.
- Expiry matters when a request is made, never to an open stream.
- A secret shorter than :data:`MIN_SECRET_BYTES` is refused (RFC 7518 3.2: an
  HS256 key is at least 256 bits); secrets are never logged.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt.types import Options

from pulsestream.watchedfile import WatchedFile
from pulsestream_streamer.access.scopes import Scope, ScopeError

__all__ = [
    "AUDIENCE",
    "ISSUER",
    "MIN_SECRET_BYTES",
    "Minted",
    "TokenClaims",
    "TokenRejected",
    "TokenSecrets",
    "Tokens",
]

logger = logging.getLogger(__name__)

ISSUER = "pulsestream-streamer"
AUDIENCE = "pulsestream"
ALGORITHM = "HS256"
#: RFC 7518 section 3.2: a key of the same size as the hash output, or larger.
MIN_SECRET_BYTES = 32
_KID_DOMAIN = b"pulsestream-token-kid:"
#: The ``sub`` of tokens minted while the streamer is open (no key to name).
ANONYMOUS = "anonymous"

_jwt = jwt.PyJWT(options={"enforce_minimum_key_length": True})


class TokenRejected(Exception):
    """A presented token is not accepted; ``reason`` is RFC 6750's ``error``-style word, ``str()`` says why.

    The message never holds the token.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def kid_of(secret: bytes) -> str:
    """The id of a signing secret: stable, short, and telling nothing of the secret."""
    return "s-" + hashlib.sha256(_KID_DOMAIN + secret).hexdigest()[:12]


class _SecretFile:
    """One secret file, re-read by content hash; the last good secret stays when the file goes bad."""

    def __init__(self, path: Path, required: bool) -> None:
        self.path = path
        self.required = required
        self._watched = WatchedFile(path)
        self.secret: bytes | None = None
        self.error: str | None = None

    def reload(self) -> bool:
        try:
            raw = self._watched.read_if_changed()
        except FileNotFoundError:
            if self.required:
                return self._reject(f"cannot read {self.path}: no such file")
            raw = b""  # no previous secret (a Secret without that key): no rotation in progress
        except OSError as error:
            return self._reject(f"cannot read {self.path}: {error.strerror or error}")
        if raw is None:
            return False
        value = raw.strip()
        if not value and not self.required:  # an emptied previous-secret file ends a rotation
            changed, self.secret, self.error = self.secret is not None, None, None
            return changed
        if len(value) < MIN_SECRET_BYTES:
            return self._reject(f"{self.path} holds {len(value)} bytes; a token secret needs {MIN_SECRET_BYTES}+")
        changed = value != self.secret
        self.secret, self.error = value, None
        return changed

    def _reject(self, message: str) -> bool:
        if message != self.error:
            logger.error("token secret rejected, keeping the last good one: %s", message)
        self.error = message
        return False


class TokenSecrets:
    """The secrets in force: the current one signs and verifies, the previous one (while rotating) verifies."""

    def __init__(self, secret_file: str | Path | None = None, previous_file: str | Path | None = None) -> None:
        self.configured = bool(secret_file)
        self._current = _SecretFile(Path(secret_file), required=True) if secret_file else None
        self._previous = _SecretFile(Path(previous_file), required=False) if previous_file else None
        # Without a file, one random secret for this process's life (never written anywhere).
        self._ephemeral = None if secret_file else secrets.token_bytes(48)
        self.reload()

    def reload(self) -> bool:
        """Re-read the secret files (by content hash); ``True`` if a secret changed."""
        changed = False
        for holder in (self._current, self._previous):
            if holder is not None and holder.reload():
                changed = True
                logger.info("token secret loaded", extra={"kid": kid_of(holder.secret) if holder.secret else ""})
        return changed

    @property
    def error(self) -> str | None:
        """Why a secret file was last rejected, or ``None``."""
        errors = [h.error for h in (self._current, self._previous) if h is not None and h.error]
        return "; ".join(errors) or None

    def signing(self) -> bytes | None:
        """The secret that signs new tokens, or ``None`` when the configured file never held a good one."""
        return self._current.secret if self._current is not None else self._ephemeral

    def verifying(self) -> dict[str, bytes]:
        """Every secret that verifies, by kid."""
        found = [self.signing(), self._previous.secret if self._previous is not None else None]
        return {kid_of(secret): secret for secret in found if secret}

    def secrets(self) -> tuple[str, ...]:
        """The secrets as text, for the log redaction filter; never log these."""
        return tuple(secret.decode("utf-8", "replace") for secret in self.verifying().values())


@dataclass(frozen=True, slots=True)
class Minted:
    """A new token: the JWT, when it expires (epoch seconds) and what it grants."""

    token: str
    expires_at: int
    scope: Scope


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """A verified token: whose key minted it (its id), what it grants, when it expires (epoch seconds)."""

    subject: str
    scope: Scope
    expires_at: int


def scope_claim(value: Any) -> Scope:
    """A ``series`` claim (a list of globs, or one string of globs split by spaces or commas) as a scope.

    Raises :class:`ScopeError` when it is missing, empty or holds something that is not a glob.
    """
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value
    else:
        raise ScopeError("the series claim must be a list of series globs")
    return Scope.of(items)


class Tokens:
    """Mints and verifies stream tokens with :class:`TokenSecrets` (see the module docstring)."""

    def __init__(self, secrets_: TokenSecrets, leeway: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self.secrets = secrets_
        self.leeway = leeway
        self._clock = clock

    def mint(self, subject: str, scope: Scope, ttl: float) -> Minted:
        """A token for the key with id ``subject``, granting ``scope``, valid ``ttl`` seconds from now.

        Raises :class:`TokenRejected` (``"unavailable"``) when no secret can sign.
        """
        secret = self.secrets.signing()
        if secret is None:
            raise TokenRejected("unavailable", f"tokens are unavailable: {self.secrets.error or 'no signing secret'}")
        now = int(self._clock())
        expires = now + max(1, round(ttl))
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "exp": expires,
            "jti": secrets.token_urlsafe(12),
            "series": scope.claim(),
        }
        token = _jwt.encode(claims, secret, algorithm=ALGORITHM, headers={"kid": kid_of(secret), "typ": "JWT"})
        return Minted(token, expires, scope)

    def verify(self, token: str, header: dict[str, Any]) -> TokenClaims:
        """The claims of ``token`` (its ``header`` already read), or :class:`TokenRejected` saying why."""
        keys = self.secrets.verifying()
        kid = header.get("kid")
        candidates = [keys[kid]] if isinstance(kid, str) and kid in keys else list(keys.values())
        if not candidates:
            raise TokenRejected("invalid_token", "the token was signed with a secret no longer in force")
        error: jwt.PyJWTError | None = None
        for secret in candidates:
            try:
                claims = _jwt.decode(
                    token,
                    secret,
                    algorithms=[ALGORITHM],
                    audience=AUDIENCE,
                    issuer=ISSUER,
                    options=untimed(["exp", "iat", "sub", "aud", "iss"]),
                )
            except jwt.InvalidSignatureError as failed:
                error = failed
                continue
            except jwt.PyJWTError as failed:
                raise rejection(failed) from None
            check_times(claims, self._clock(), self.leeway)
            return _claims(claims)
        raise rejection(error or jwt.InvalidSignatureError()) from None


def untimed(require: list[str]) -> Options:
    """PyJWT options that require ``require`` but leave times to :func:`check_times` (PyJWT reads its own
    clock; ours is injected, so tests can move it)."""
    return {"require": require, "verify_exp": False, "verify_nbf": False, "verify_iat": False}


def check_times(claims: dict[str, Any], now: float, leeway: float) -> None:
    """``exp`` (required), ``nbf`` and ``iat`` against ``now``, each within ``leeway`` seconds (RFC 7519 4.1)."""
    times = {name: claims.get(name) for name in ("exp", "nbf", "iat")}
    for name, value in times.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise TokenRejected("invalid_token", f"the token's {name} claim is not a number of seconds")
    exp, nbf, iat = times["exp"], times["nbf"], times["iat"]
    if exp is None:
        raise TokenRejected("invalid_token", "the token has no exp claim")
    if now > exp + leeway:
        raise rejection(jwt.ExpiredSignatureError())
    if (nbf is not None and now + leeway < nbf) or (iat is not None and now + leeway < iat):
        raise rejection(jwt.ImmatureSignatureError())


def _claims(claims: dict[str, Any]) -> TokenClaims:
    try:
        scope = scope_claim(claims.get("series"))
    except ScopeError as error:
        raise TokenRejected("invalid_token", f"token series claim: {error}") from None
    return TokenClaims(str(claims["sub"]), scope, int(claims["exp"]))


def rejection(error: jwt.PyJWTError) -> TokenRejected:
    """A PyJWT error as our own words (PyJWT's never hold the token, ours say what to do)."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return TokenRejected("invalid_token", "the token expired: get a fresh one (POST /v1/tokens)")
    if isinstance(error, jwt.ImmatureSignatureError):
        return TokenRejected("invalid_token", "the token is not valid yet (its iat or nbf is in the future)")
    if isinstance(error, jwt.InvalidAudienceError):
        return TokenRejected("invalid_token", "the token is for another audience")
    if isinstance(error, jwt.InvalidIssuerError):
        return TokenRejected("invalid_token", "the token is from another issuer")
    if isinstance(error, jwt.MissingRequiredClaimError):
        return TokenRejected("invalid_token", f"the token has no {error.claim} claim")
    if isinstance(error, jwt.InvalidSignatureError):
        return TokenRejected("invalid_token", "the token's signature does not verify")
    if isinstance(error, jwt.InvalidAlgorithmError):
        return TokenRejected("invalid_token", "the token is signed with an algorithm not accepted here")
    return TokenRejected("invalid_token", "the token is malformed")
