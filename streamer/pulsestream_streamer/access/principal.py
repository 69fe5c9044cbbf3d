"""Who a request comes from and what it may read: a credential in, a :class:`Principal` (or a refusal) out.

A request presents at most one credential, taken in this order:

1. ``Authorization: Bearer VALUE``: an API key, else (if it has a JWT's shape)
   a stream token or an identity provider's JWT;
2. ``X-API-Key: KEY``;
3. ``?access_token=TOKEN`` (a token, for ``EventSource``);
4. ``?api_key=KEY`` (a key, for ``EventSource``; prefer a token).

The outcomes:

- an API key in force: its client is the key's id, its scope the key's;
- a stream token (HS256, :mod:`.tokens`): its client is its key's id (a token
  counts as its key for rate limits and stream caps), its scope what the token
  grants *and* what the key allows now; a token whose key is no longer in
  force is refused;
- a provider's JWT (RS256/ES256, :mod:`.idp`): its client is ``jwt-...``, its
  scope the ``series`` claim's;
- open mode (no key and no provider configured): every request passes as
  its address, whatever it presents, and may read every series.

Pure: the caller supplies the stores; a token signed by a provider key the
set lacks comes back as :class:`~.idp.UnknownSigningKey` for the caller to
refresh the set (I/O) and ask again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import jwt

from pulsestream_streamer.access.idp import IdpTokens, UnknownSigningKey
from pulsestream_streamer.access.keys import KeyStore
from pulsestream_streamer.access.scopes import ALL, Scope
from pulsestream_streamer.access.tokens import ANONYMOUS, TokenRejected, Tokens

__all__ = [
    "OPEN",
    "Authenticator",
    "Credential",
    "Principal",
    "Unauthenticated",
    "UnknownSigningKey",
    "looks_like_jwt",
    "presented_credential",
]

#: A compact JWS: three base64url parts, the header's JSON starting ``{"`` or ``{ "`` (``eyJ``/``eyA``/``eyI``).
_JWT = re.compile(r"^ey[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
#: Anything longer is not a token of ours nor a provider's (they are well under 4 KiB), and is not parsed.
MAX_TOKEN_LENGTH = 8192

Kind = Literal["key", "token", "jwt", "open"]
Where = Literal["bearer", "header", "access_token", "api_key"]


def looks_like_jwt(value: str) -> bool:
    """Whether ``value`` has the shape of a compact JWT (it may still be garbage)."""
    return len(value) <= MAX_TOKEN_LENGTH and _JWT.match(value) is not None


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request presented, and where."""

    value: str
    where: Where


def presented_credential(headers: Mapping[str, str], query: Mapping[str, str]) -> Credential | None:
    """The credential a request presents (see the module docstring for the order), or ``None``.

    ``headers`` must look names up case-insensitively (as Starlette's ``Headers`` do); ``query`` should
    keep ``+`` literal (:func:`~.keys.credential_query`).
    """
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return Credential(value.strip(), "bearer")
    header = headers.get("x-api-key")
    if header and header.strip():
        return Credential(header.strip(), "header")
    token = query.get("access_token")
    if token:
        return Credential(token, "access_token")
    key = query.get("api_key")
    return Credential(key, "api_key") if key else None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: ``client_id`` (``None`` for open mode: the caller names it by address) and what it may read.

    ``scopes`` all apply: a token's own and its key's current one.
    """

    kind: Kind
    client_id: str | None
    scopes: tuple[Scope, ...] = (ALL,)
    expires_at: int | None = None

    def allows(self, name: str) -> bool:
        """Whether the series ``name`` may be read."""
        return all(scope.allows(name) for scope in self.scopes)

    def first_denied(self, names: Iterable[str]) -> str | None:
        """The first of ``names`` that may not be read, or ``None``."""
        return next((name for name in names if not self.allows(name)), None)

    @property
    def everything(self) -> bool:
        return all(scope.everything for scope in self.scopes)


OPEN = Principal("open", None)


class Unauthenticated(Exception):
    """No acceptable credential: ``reason`` is ``missing`` or ``invalid_token`` (RFC 6750), ``str()`` says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Authenticator:
    """Turns a credential into a :class:`Principal` with the key store, the token secrets and the provider."""

    def __init__(self, keys: KeyStore, tokens: Tokens, idp: IdpTokens | None = None) -> None:
        self.keys = keys
        self.tokens = tokens
        self.idp = idp

    @property
    def open(self) -> bool:
        """No key and no provider configured: every request passes."""
        return self.keys.open and self.idp is None

    def authenticate(self, credential: Credential | None) -> Principal:
        """The principal of ``credential``; raises :class:`Unauthenticated`, or :class:`UnknownSigningKey`."""
        if self.open:
            return OPEN
        if credential is None:
            raise Unauthenticated("missing", _MISSING)
        if credential.where in ("bearer", "header", "api_key"):
            grant = self.keys.grant(credential.value)
            if grant is not None:
                return Principal("key", grant.key_id, (grant.scope,))
            if credential.where != "bearer" or not looks_like_jwt(credential.value):
                raise Unauthenticated("invalid_token", "the API key is not valid")
        return self._token(credential.value)

    def _token(self, token: str) -> Principal:
        if not looks_like_jwt(token):
            raise Unauthenticated("invalid_token", "the token is malformed")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") == "HS256":
                return self._minted(token, header)
            if self.idp is None:
                raise Unauthenticated("invalid_token", "tokens from an identity provider are not accepted here")
            claims = self.idp.verify(token, header)
        except jwt.PyJWTError:
            raise Unauthenticated("invalid_token", "the token is malformed") from None
        except TokenRejected as error:
            raise Unauthenticated(error.reason, str(error)) from None
        return Principal("jwt", claims.client_id, (claims.scope,), claims.expires_at)

    def _minted(self, token: str, header: dict[str, object]) -> Principal:
        claims = self.tokens.verify(token, header)
        grant = self.keys.grant_of(claims.subject)
        if grant is None:
            if claims.subject == ANONYMOUS:
                raise TokenRejected("invalid_token", "the token was minted while the API was open: mint one with a key")
            raise TokenRejected("invalid_token", "the API key this token was minted with is no longer accepted")
        return Principal("token", grant.key_id, (claims.scope, grant.scope), claims.expires_at)


_MISSING = (
    "an API key or a token is required: Authorization: Bearer, X-API-Key, "
    "or the access_token (or api_key) query parameter"
)
