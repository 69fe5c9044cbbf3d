"""API keys for ``/v1/*``: where they come from, how a request presents one, how it is checked.

Keys come from ``STREAMER_API_KEYS`` (comma-separated) and from an optional key
file ``STREAMER_API_KEYS_FILE`` (one key per line, ``#`` comments allowed), the
shape of a mounted Kubernetes Secret. The file is polled by content hash,
like the live settings file, so the atomic ``..data`` symlink swap kubelet
does on a Secret update is seen and keys rotate without a restart.

A key file line may limit its key to some series: ``KEY series=cpu,mem*``
(globs, :mod:`.scopes`). A line with the key alone, and every key of
``STREAMER_API_KEYS``, grants every series. A key listed more than once gets
the union of its lines.

Guarantees:

- A request presents a key as ``Authorization: Bearer KEY``, ``X-API-Key: KEY``
  or the ``api_key`` query parameter (an ``EventSource`` cannot set headers).
- :meth:`KeyStore.accepts` compares the SHA-256 digest of the presented key
  with the digest of every configured key using :func:`hmac.compare_digest`,
  without an early exit: the time taken tells nothing about which key, if any,
  matched, nor how long the keys are.
- The service is open only when no key source is configured at all (both
  settings empty); it says so once at start-up. A configured key file that is
  missing, unreadable or empty never opens the service: with no valid key,
  every request is refused (fail closed), and the error is logged.
- Keys are never logged; only their count and the file path are. A bad line is
  named by its number, never quoted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from pulsestream.watchedfile import WatchedFile
from pulsestream_streamer.access.clientid import key_id
from pulsestream_streamer.access.scopes import ALL, Scope, ScopeError

logger = logging.getLogger(__name__)

#: RFC 6750 ``b64token``: the characters a Bearer token may hold, so every key can travel in each of the three ways.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")

OPEN_MODE_WARNING = "API keys not configured: /v1 is open"


class InvalidKeyError(ValueError):
    """A configured key is not a valid token (the message never contains the key)."""


def parse_keys(text: str, separator: str | None = None) -> list[str]:
    """Split ``text`` into keys: by ``separator`` (``None``: lines, ``#`` comments skipped); blanks dropped.

    Raises :class:`InvalidKeyError` naming the position of a key with characters outside the Bearer alphabet.
    """
    if separator is None:
        parts = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    else:
        parts = [part.strip() for part in text.split(separator)]
    keys = [part for part in parts if part]
    for index, key in enumerate(keys, start=1):
        if not KEY_PATTERN.match(key):
            raise InvalidKeyError(
                f"key #{index} has characters an API key cannot hold "
                "(allowed: letters, digits, - . _ ~ + / and trailing =)"
            )
    return keys


def parse_key_file(text: str) -> list[tuple[str, Scope]]:
    """The key file's entries: each line ``KEY`` or ``KEY series=GLOB,GLOB`` (``#`` comments, blanks skipped).

    Raises :class:`InvalidKeyError` naming the line (never quoting it) when a key holds characters outside
    the Bearer alphabet, an option other than ``series=`` follows it, or a glob is not valid.
    """
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        key, options = words[0], words[1:]
        if not KEY_PATTERN.match(key):
            raise InvalidKeyError(
                f"line {number}: the key has characters an API key cannot hold "
                "(allowed: letters, digits, - . _ ~ + / and trailing =)"
            )
        scope = ALL
        for option in options:
            name, sep, value = option.partition("=")
            if option.startswith("#"):
                break  # a comment after the key
            if name != "series" or not sep:
                raise InvalidKeyError(f"line {number}: after the key only series=GLOB,GLOB may follow")
            try:
                scope = Scope.of(value.split(","))
            except ScopeError as error:
                raise InvalidKeyError(f"line {number}: series=: {error}") from None
        entries.append((key, scope))
    return entries


@dataclass(frozen=True, slots=True)
class Grant:
    """What an accepted key may do: its opaque id (for limits, logs and the tokens it mints) and its scope."""

    key_id: str
    scope: Scope


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def credential_query(raw: bytes) -> dict[str, str]:
    """The query string's parameters with ``+`` kept as ``+``, as credentials need it.

    Form decoding turns ``+`` into a space, but a key may hold ``+`` (the Bearer alphabet) and
    never a space: ``?api_key=a+b`` means the key ``a+b``, as does the percent-encoded ``a%2Bb``.
    """
    text = raw.decode("latin-1").replace("+", "%2B")
    return dict(parse_qsl(text, keep_blank_values=True))


def presented_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key a request presents, or ``None``: ``Authorization: Bearer``, then ``X-API-Key``, then ``api_key``.

    ``headers`` must look names up case-insensitively (as Starlette's ``Headers`` do).
    """
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    header = headers.get("x-api-key")
    if header and header.strip():
        return header.strip()
    value = query.get("api_key")
    if value:
        return value
    return None


class KeyStore:
    """The keys in force: the environment's plus the key file's, re-read when the file changes."""

    def __init__(
        self, env_keys: Iterable[str] = (), key_file: str | Path | None = None, poll_interval: float = 1.0
    ) -> None:
        self._env_keys = tuple(env_keys)
        self.key_file = Path(key_file) if key_file else None
        self._watched = WatchedFile(self.key_file) if self.key_file else None
        self.poll_interval = poll_interval
        self._file_keys: tuple[str, ...] = ()
        self._file_scopes: tuple[Scope, ...] = ()
        self._error: str | None = None
        self._digests: tuple[bytes, ...] = ()
        self._grants: tuple[Grant, ...] = ()
        self._by_id: dict[str, Grant] = {}
        self._rebuild()
        self.reload()

    @property
    def open(self) -> bool:
        """``True`` when no key source is configured: every request is let through."""
        return not self._env_keys and self.key_file is None

    @property
    def error(self) -> str | None:
        """Why the key file was last rejected, or ``None``."""
        return self._error

    @property
    def count(self) -> int:
        """Number of distinct keys in force."""
        return len(self._digests)

    def secrets(self) -> tuple[str, ...]:
        """The keys in force, for the log redaction filter to scrub; never log these."""
        return self._env_keys + self._file_keys

    def accepts(self, key: str | None) -> bool:
        """Whether ``key`` is one of the keys in force; always ``True`` in open mode.

        Every configured key is compared, whatever the outcome, in constant time per key.
        """
        return self.open or self.grant(key) is not None

    def grant(self, key: str | None) -> Grant | None:
        """What ``key`` may do, or ``None`` if it is not a key in force (open mode included: no key is).

        Every configured key is compared, whatever the outcome (no early exit), in constant time per key.
        """
        if key is None or not self._digests:
            return None
        candidate = _digest(key)
        found = -1
        for index, digest in enumerate(self._digests):
            if hmac.compare_digest(candidate, digest):
                found = index
        return self._grants[found] if found >= 0 else None

    def grant_of(self, key_id: str) -> Grant | None:
        """The grant of the key whose id is ``key_id`` while that key is in force (tokens it minted need it)."""
        return self._by_id.get(key_id)

    def log_mode(self) -> None:
        """Say at start-up whether ``/v1`` is protected (never which keys)."""
        if self.open:
            logger.warning(OPEN_MODE_WARNING)
        else:
            logger.info(
                "API keys configured",
                extra={"keys": self.count, "key_file": str(self.key_file) if self.key_file else ""},
            )

    def reload(self) -> bool:
        """Read the key file now; return ``True`` if the keys in force changed."""
        if self._watched is None:
            return False
        try:
            raw = self._watched.read_if_changed()
        except OSError as error:
            return self._reject(f"cannot read key file {self.key_file}: {error.strerror or error}")
        if raw is None:
            return False
        try:
            entries = parse_key_file(raw.decode("utf-8", "replace"))
        except InvalidKeyError as error:
            return self._reject(f"key file {self.key_file}: {error}")
        keys = [key for key, _ in entries]
        if not keys:
            # Applied, not rejected: emptying the file is how its keys are revoked.
            message = f"key file {self.key_file} holds no keys"
            if message != self._error:
                logger.warning("API key file emptied: its keys are revoked", extra={"key_file": str(self.key_file)})
            self._error = message
        else:
            self._error = None
        scopes = tuple(scope for _, scope in entries)
        if tuple(keys) == self._file_keys and scopes == self._file_scopes:
            return False
        self._file_keys = tuple(keys)
        self._file_scopes = scopes
        self._rebuild()
        logger.info("API keys reloaded", extra={"keys": self.count, "key_file": str(self.key_file)})
        return True

    def _reject(self, message: str) -> bool:
        # An unreadable or invalid file leaves the last good keys in force: a rename in progress must not lock
        # everyone out. An empty file is applied (it is how all file keys are revoked) and the store stays closed.
        if message != self._error:
            logger.error("API key file rejected, keeping %d keys: %s", self.count, message)
        self._error = message
        return False

    def _rebuild(self) -> None:
        scopes: dict[str, Scope] = {}
        entries = (*((key, ALL) for key in self._env_keys), *zip(self._file_keys, self._file_scopes, strict=True))
        for key, scope in entries:
            scopes[key] = scopes[key].union(scope) if key in scopes else scope
        self._digests = tuple(_digest(key) for key in scopes)
        self._grants = tuple(Grant(key_id(key), scope) for key, scope in scopes.items())
        self._by_id = {grant.key_id: grant for grant in self._grants}

    async def changes(self) -> AsyncIterator[int]:
        """Poll the key file; yield the key count after each change, until cancelled."""
        if self.key_file is None:
            await asyncio.Event().wait()  # nothing to watch; park until cancelled
        while True:
            await asyncio.sleep(self.poll_interval)
            if self.reload():
                yield self.count
