"""API keys for ``/v1/*``: where they come from, how a request presents one, how it is checked.

Keys come from ``STREAMER_API_KEYS`` (comma-separated) and from an optional key
file ``STREAMER_API_KEYS_FILE`` (one key per line, ``#`` comments allowed), the
shape of a mounted Kubernetes Secret. The file is polled by content hash,
like the live settings file, so the atomic ``..data`` symlink swap kubelet
does on a Secret update is seen and keys rotate without a restart.

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
- Keys are never logged; only their count and the file path are.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from urllib.parse import parse_qsl

from pulsestream.watchedfile import WatchedFile

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
        self._error: str | None = None
        self._digests: tuple[bytes, ...] = ()
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
        if self.open:
            return True
        if key is None:
            return False
        candidate = _digest(key)
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(candidate, digest)
        return matched

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
            keys = parse_keys(raw.decode("utf-8", "replace"))
        except InvalidKeyError as error:
            return self._reject(f"key file {self.key_file}: {error}")
        if not keys:
            # Applied, not rejected: emptying the file is how its keys are revoked.
            message = f"key file {self.key_file} holds no keys"
            if message != self._error:
                logger.warning("API key file emptied: its keys are revoked", extra={"key_file": str(self.key_file)})
            self._error = message
        else:
            self._error = None
        if tuple(keys) == self._file_keys:
            return False
        self._file_keys = tuple(keys)
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
        self._digests = tuple(dict.fromkeys(_digest(key) for key in (*self._env_keys, *self._file_keys)))

    async def changes(self) -> AsyncIterator[int]:
        """Poll the key file; yield the key count after each change, until cancelled."""
        if self.key_file is None:
            await asyncio.Event().wait()  # nothing to watch; park until cancelled
        while True:
            await asyncio.sleep(self.poll_interval)
            if self.reload():
                yield self.count
