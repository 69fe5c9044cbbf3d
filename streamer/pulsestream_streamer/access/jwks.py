"""An identity provider's signing keys (a JWKS, RFC 7517), fetched over https or read from a file, kept fresh.

``STREAMER_JWT_JWKS_URL`` is an ``https://`` URL (the provider's
``jwks_uri``, e.g. Keycloak's ``.../protocol/openid-connect/certs``) or a file
path (a JWKS mounted from a ConfigMap, for clusters that cannot reach the
provider). TLS is verified, against the system's CAs or
``STREAMER_JWT_JWKS_CA_FILE``; plain ``http://`` is refused by the settings,
since whoever can change the keys can mint any token.

Guarantees:

- The keys are fetched at start and every ``refresh`` seconds by
  :meth:`JwksSource.run`, a task the app's lifespan owns. A token signed with
  a ``kid`` not in the set triggers one early fetch (:meth:`JwksSource.ensure`),
  at most once per :data:`MIN_INTERVAL` (or ``refresh``, if shorter) and one at a
  time, so a provider's key rotation is picked up at the first token that
  uses the new key, and tokens with made-up ``kid``s cannot make the streamer
  hammer the provider.
- A fetch that fails (unreachable, TLS, HTTP status, not a JWKS, no usable
  key) keeps the last good keys; :meth:`JwksSource.state` (in ``/health``)
  says when the last fetch ran, when one last succeeded and the error. After
  a failure the next try comes sooner (backoff from 1 s up to ``refresh``).
- Only RSA (RS256) and P-256 EC (ES256) signing keys are kept: a symmetric
  (``oct``) key in a JWKS is never used, so a public document cannot turn into
  an HMAC secret (algorithm confusion).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from pulsestream.watchedfile import WatchedFile

__all__ = ["ALGORITHMS", "MIN_INTERVAL", "JwksError", "JwksSource", "parse_jwks"]

logger = logging.getLogger(__name__)

#: What identity-provider tokens may be signed with.
ALGORITHMS = ("RS256", "ES256")
#: Least time between two fetches an unknown ``kid`` may trigger.
MIN_INTERVAL = 10.0
#: Time one fetch gets, connection included.
FETCH_TIMEOUT = 5.0
#: Largest JWKS document read (a provider's holds a few keys: a few KB).
MAX_BYTES = 1024 * 1024


class JwksError(Exception):
    """The JWKS could not be fetched or read; ``str()`` says why (never a key)."""


def parse_jwks(raw: bytes) -> dict[str | None, jwt.PyJWK]:
    """The usable signing keys of a JWKS document, by ``kid`` (``None`` for a key without one)."""
    try:
        document = json.loads(raw)
    except ValueError as error:
        raise JwksError(f"not JSON: {error}") from None
    items = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise JwksError('not a JWKS: no "keys" list')
    keys: dict[str | None, jwt.PyJWK] = {}
    for item in items:
        if not isinstance(item, dict) or item.get("kty") not in ("RSA", "EC") or item.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(item)
        except jwt.PyJWTError:
            continue  # an unsupported curve or a broken key: the others still count
        if key.algorithm_name in ALGORITHMS:
            keys[key.key_id] = key
    if not keys:
        raise JwksError(f"no usable signing key (RSA for RS256, EC P-256 for ES256) among {len(items)}")
    return keys


def _stamp(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if epoch else None


def describe_location(location: str) -> str:
    """``location`` as safe to show: a URL without user info, query or fragment; a path as it is."""
    parts = urlsplit(location)
    if parts.scheme in ("http", "https"):
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"
    return location


class JwksSource:
    """The provider's keys in force, their freshness, and the task that refreshes them."""

    def __init__(
        self,
        location: str,
        *,
        refresh: float = 300.0,
        ca_file: str | None = None,
        fetch: Callable[[], Awaitable[bytes]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.location = location
        self.refresh_interval = refresh
        self.min_interval = min(MIN_INTERVAL, refresh)
        self._is_url = urlsplit(location).scheme in ("http", "https")
        self._file = None if self._is_url else WatchedFile(Path(location), MAX_BYTES)
        self._ca_file = ca_file or None
        self._fetch = fetch or (self._get if self._is_url else self._read)
        self._clock = clock
        self._wall = wall
        self.keys: dict[str | None, jwt.PyJWK] = {}
        self.error: str | None = "not fetched yet"
        self._attempted: float | None = None  # monotonic
        self._attempted_at: float | None = None  # epoch, for /health
        self._succeeded_at: float | None = None
        self._failures = 0
        self._lock = asyncio.Lock()

    def key(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        """The key for a token's ``kid`` and ``alg``: by id; a token without ``kid`` fits a set of one key."""
        key = next(iter(self.keys.values())) if kid is None and len(self.keys) == 1 else self.keys.get(kid)
        return key if key is not None and key.algorithm_name == algorithm else None

    def state(self) -> dict[str, Any]:
        """What ``/health`` shows: where, how many keys, last attempt and success (RFC 3339), the error."""
        return {
            "source": describe_location(self.location),
            "keys": len(self.keys),
            "last_fetch": _stamp(self._attempted_at),
            "last_success": _stamp(self._succeeded_at),
            "error": self.error,
        }

    async def refresh(self) -> bool:
        """Fetch the keys now; ``True`` on success (a failure keeps the last good keys and is logged once)."""
        async with self._lock:
            return await self._refresh()

    async def ensure(self, kid: str | None) -> bool:
        """An early fetch for a token whose ``kid`` is unknown, if none ran within the minimum interval.

        Returns whether the set now has ``kid``. Concurrent callers share one fetch.
        """
        if kid in self.keys:
            return True
        async with self._lock:
            if kid in self.keys:
                return True  # another request's fetch brought it
            if self._attempted is not None and self._clock() - self._attempted < self.min_interval:
                return False
            await self._refresh()
        return kid in self.keys

    async def run(self) -> None:
        """Keep the keys fresh until cancelled: fetch now, then every ``refresh`` (sooner after a failure)."""
        while True:
            ok = await self.refresh()
            delay = self.refresh_interval if ok else min(self.refresh_interval, 2.0 ** min(self._failures - 1, 10))
            await asyncio.sleep(delay)

    async def _refresh(self) -> bool:
        self._attempted, self._attempted_at = self._clock(), self._wall()
        try:
            raw = await self._fetch()
            if not raw:  # a file unchanged since it was last read: its verdict stands
                return self.error is None
            keys = parse_jwks(raw)
        except JwksError as error:
            return self._failed(str(error))
        if set(keys) != set(self.keys):
            logger.info("JWKS keys loaded", extra={"keys": len(keys), "jwks": describe_location(self.location)})
        self.keys = keys
        self.error = None
        self._failures = 0
        self._succeeded_at = self._attempted_at
        return True

    def _failed(self, message: str) -> bool:
        self._failures += 1
        if message != self.error:
            logger.error(
                "JWKS fetch failed, keeping %d keys: %s", len(self.keys), message,
                extra={"jwks": describe_location(self.location)},
            )  # fmt: skip
        self.error = message
        return False

    async def _read(self) -> bytes:
        """The JWKS file's content if it changed, else ``b""`` (the keys in force stay)."""
        assert self._file is not None
        try:
            return await asyncio.to_thread(self._file.read_if_changed) or b""
        except OSError as error:
            raise JwksError(f"cannot read {self.location}: {error.strerror or error}") from None

    async def _get(self) -> bytes:
        verify: ssl.SSLContext | bool = True
        if self._ca_file:
            try:
                verify = ssl.create_default_context(cafile=self._ca_file)
            except (OSError, ssl.SSLError) as error:
                raise JwksError(f"cannot load CA file {self._ca_file}: {error}") from None
        try:
            async with (
                httpx.AsyncClient(verify=verify, timeout=FETCH_TIMEOUT, follow_redirects=False) as client,
                client.stream("GET", self.location, headers={"Accept": "application/json"}) as response,
            ):
                if response.status_code != 200:
                    raise JwksError(f"HTTP {response.status_code} from {describe_location(self.location)}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise JwksError(f"the JWKS is larger than {MAX_BYTES:,} bytes")
                return bytes(body)
        except httpx.HTTPError as error:
            raise JwksError(f"{type(error).__name__}: {error}") from None
