"""JWTs from an identity provider: RS256/ES256 with its JWKS, checked issuer and audience, a ``series`` claim.

A provider (Keycloak, Auth0, Dex, Azure AD, ...) signs access tokens with
keys it publishes as a JWKS (:mod:`.jwks`). A token is accepted when:

- its ``alg`` is RS256 or ES256 and its ``kid`` names a key of the set (a set
  of one key also fits a token without ``kid``);
- the signature verifies with that key;
- ``iss`` equals ``STREAMER_JWT_ISSUER`` and ``aud`` is or contains
  ``STREAMER_JWT_AUDIENCE``;
- ``exp`` is in the future and ``nbf``/``iat`` are not, each within the leeway
  (``STREAMER_TOKEN_LEEWAY``, 30 s by default: clocks of two machines differ by
  a few seconds, and a minute's drift is the most NTP lets happen);
- it has a ``sub``.

Its ``series`` claim (``STREAMER_JWT_SERIES_CLAIM``) grants the series
matching its globs: a list (``["cpu", "checkout.*"]``) or one string split by
spaces or commas (what providers emit for a mapped attribute). A token
without the claim authenticates but grants no series (``403`` on streams).
Its client, for rate limits, is ``jwt-`` and 16 hex digits of a hash of
issuer and subject.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from pulsestream_streamer.access.jwks import ALGORITHMS, JwksSource
from pulsestream_streamer.access.scopes import Scope, ScopeError
from pulsestream_streamer.access.tokens import TokenRejected, check_times, rejection, scope_claim, untimed

__all__ = ["NOTHING", "IdpClaims", "IdpTokens", "UnknownSigningKey"]

#: The scope of a provider's token without a series claim: no series.
NOTHING = Scope(())


class UnknownSigningKey(Exception):
    """The token names a key the JWKS in force lacks: fetch the set again, then verify again."""

    def __init__(self, kid: str | None) -> None:
        super().__init__(kid)
        self.kid = kid


@dataclass(frozen=True, slots=True)
class IdpClaims:
    """A verified provider token: its client id, what it grants, when it expires (epoch seconds)."""

    client_id: str
    scope: Scope
    expires_at: int


def client_id(issuer: str, subject: str) -> str:
    """A stable id for a provider's subject, safe to log (a subject may be an e-mail address)."""
    digest = hashlib.sha256(f"pulsestream-jwt:{issuer}\0{subject}".encode("utf-8", "surrogateescape")).hexdigest()
    return "jwt-" + digest[:16]


class IdpTokens:
    """Verifies an identity provider's tokens with its keys (see the module docstring)."""

    def __init__(
        self,
        jwks: JwksSource,
        issuer: str,
        audience: str,
        *,
        series_claim: str = "series",
        leeway: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.series_claim = series_claim
        self.leeway = leeway
        self._clock = clock

    def verify(self, token: str, header: dict[str, Any]) -> IdpClaims:
        """The claims of ``token``; :class:`UnknownSigningKey` if its key is not in the set, else
        :class:`~.tokens.TokenRejected` saying why."""
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise TokenRejected("invalid_token", "the token is signed with an algorithm not accepted here")
        kid = header.get("kid")
        key = self.jwks.key(kid if isinstance(kid, str) else None, str(algorithm))
        if key is None:
            raise UnknownSigningKey(kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                audience=self.audience,
                issuer=self.issuer,
                options=untimed(["exp", "iss", "aud", "sub"]),
            )
        except jwt.PyJWTError as error:
            raise rejection(error) from None
        check_times(claims, self._clock(), self.leeway)
        raw = claims.get(self.series_claim)
        try:
            scope = NOTHING if raw is None else scope_claim(raw)
        except ScopeError as error:
            raise TokenRejected("invalid_token", f"the token's {self.series_claim} claim: {error}") from None
        return IdpClaims(client_id(self.issuer, str(claims["sub"])), scope, int(claims["exp"]))
