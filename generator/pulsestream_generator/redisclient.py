"""The Redis client the shared history uses, built from the settings, and its URL as it may be logged.

``GENERATOR_HISTORY_URL`` is ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``
or ``rediss://`` for TLS (verified against ``GENERATOR_HISTORY_TLS_CA_FILE``,
else the system's CAs). The password comes from
``GENERATOR_HISTORY_PASSWORD_FILE`` (a mounted Secret) when set, else from
the URL; it is passed to the client apart from the URL, and never logged:
:func:`redacted` is the only form of the URL that reaches a log line, and the
password joins the secrets the log redactor removes (:mod:`.auth`).

The client gives up fast, so a Redis that is down or frozen becomes an
UNAVAILABLE answer and a reconnect, not a hung call: every command and
connect has ``GENERATOR_HISTORY_TIMEOUT``, and a command is retried once,
at once, only when its connection broke (a stale pooled connection after a
Redis restart); the store's own loops do the backing off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from pulsestream_generator.settings import GeneratorSettings

__all__ = ["connect", "password_of", "redacted"]

#: Pings a pooled connection idle this long before reusing it (finds one a restart left dead).
HEALTH_CHECK_INTERVAL_S = 5


def _split(url: str) -> tuple[str, str | None]:
    """The URL without its password, and the password (``None`` when it has none)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = f"{user}@{host}" if user else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), parts.password


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``<redacted>`` (what logs and errors may show)."""
    bare, password = _split(url)
    if password is None:
        return url
    scheme, rest = bare.split("://", 1)
    user, at, host = rest.rpartition("@")
    return f"{scheme}://{user}:<redacted>@{host}" if at else f"{scheme}://:<redacted>@{rest}"


def password_of(settings: GeneratorSettings) -> str | None:
    """The Redis password: the password file's first line, else the URL's, else ``None``."""
    if settings.history_password_file:
        text = Path(settings.history_password_file).read_text()
        return text.splitlines()[0] if text.strip() else None
    return _split(settings.history_url)[1]


def connect(settings: GeneratorSettings) -> redis.Redis:
    """A client for ``GENERATOR_HISTORY_URL`` (it connects on its first command)."""
    url, _ = _split(settings.history_url)
    timeout = settings.history_timeout.seconds
    options: dict[str, Any] = {
        "password": password_of(settings),
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "retry": Retry(NoBackoff(), 1),
        "retry_on_error": [RedisConnectionError],
        "retry_on_timeout": False,
        "client_name": "pulsestream-generator",
        # RESP2: every Redis >= 2 and Valkey speak it, and the replies have the shape the store reads.
        "protocol": 2,
    }
    if url.startswith("rediss://") and settings.history_tls_ca_file:
        options["ssl_ca_certs"] = settings.history_tls_ca_file
    return redis.Redis.from_url(url, **options)
