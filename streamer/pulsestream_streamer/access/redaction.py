"""Keep API keys and tokens out of logs, the access log included.

uvicorn's access log line carries the request target with its query string,
so ``/v1/stream?api_key=...`` (or ``?access_token=...``) would write the
credential to every log sink. The
:class:`RedactingFilter`, installed on the handlers of the root logger (the
streamer routes uvicorn's loggers there), rewrites each record before any
formatter sees it:

- ``api_key=VALUE`` and ``access_token=VALUE`` in query strings (also
  percent-encoded names such as ``api%5Fkey``, which Starlette decodes to
  ``api_key``) become ``api_key=<redacted>``, ``access_token=<redacted>``;
- anything shaped like a JWT (``eyJ...``, three base64url parts), wherever it
  appears: a stream token, a provider's JWT, in a URL, a JSON body or a traceback;
- ``Bearer TOKEN`` and ``X-API-Key: VALUE`` / ``x-api-key=VALUE`` and
  ``(b'x-api-key', b'VALUE')`` header dumps lose their value;
- any configured key or token secret that still appears verbatim (say in a
  third-party debug line) is replaced too.

The message and string ``extra`` fields are redacted; a record's ``args`` are
merged into its message first, so a key passed as a ``%s`` argument is caught
as well. The streamer itself never logs headers or keys; this filter is the
second line of defence for what other libraries log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from pulsestream import redaction
from pulsestream.redaction import BEARER, REDACTED

__all__ = ["REDACTED", "RedactingFilter", "install", "redact"]

# A query value ends at &, whitespace, a quote, a fragment or a closing bracket; API keys are
# Bearer tokens (see keys.KEY_PATTERN), so none of those can be part of one, raw or percent-encoded.
_QUERY = re.compile(r"(?i)((?:api(?:_|%5f)key|access(?:_|%5f)token)(?:=|%3d))[^&\s\"'#<>)\]]*")
# A compact JWS: a base64url header whose JSON starts {" or { " (eyJ, eyA, eyI), then payload and signature.
_JWT = re.compile(r"\bey[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_HEADER = re.compile(r"(?i)(x-api-key['\"]?\s*(?:[:=]|,)\s*b?['\"]?)[^\s\"',)\]]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every API key and token removed (see the module docstring for the forms)."""
    text = _QUERY.sub(lambda m: m.group(1) + REDACTED, text)
    text = _JWT.sub(REDACTED, text)
    text = BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    return redaction.replace_secrets(text, secrets)


class RedactingFilter(redaction.RedactingFilter):
    """The shared log filter, with the streamer's forms of keys and tokens (:func:`redact`)."""

    def __init__(self, secrets: Callable[[], Iterable[str]] = tuple) -> None:
        super().__init__(redact, secrets)


def install(secrets: Callable[[], Iterable[str]] = tuple) -> redaction.RedactingFilter:
    """Add the streamer's redacting filter to every handler of the root logger (call after ``logs.configure``)."""
    return redaction.install(RedactingFilter(secrets))
