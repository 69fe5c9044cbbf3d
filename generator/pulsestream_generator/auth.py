"""Who may write: ingest tokens (``GENERATOR_INGEST_TOKENS``), and keeping them out of every log line.

``Publish`` and OTLP ``Export`` need gRPC metadata ``authorization: Bearer
TOKEN`` when tokens are configured (gRPC's and OTLP's usual header; an OTLP
exporter sends it with ``OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20TOKEN``).
The presented token is compared with *every* configured token in constant
time (:func:`hmac.compare_digest`), so neither a mismatch's position nor
which token matched shows in the timing. Subscribe and ListSeries are not
gated: they serve what the streamer needs inside the cluster, and the
generator's port is cluster-internal by default; ``GENERATOR_TLS_CLIENT_CA_FILE``
(mutual TLS) guards every RPC when the port must be reachable from outside.

Tokens never reach a log: the generator itself never logs metadata, and
:class:`TokenRedactor`, installed on the root handlers at start-up, removes
any configured token and any ``Bearer`` value from every record (message,
arguments, extra fields, traceback) in case another library logs one.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Iterable, Sequence

from pulsestream.refusals import Reason

__all__ = ["REDACTED", "TokenCheck", "TokenRedactor", "install_redactor"]

REDACTED = "<redacted>"
_BEARER = re.compile(r"(?i)(bearer(?:\s|%20|\+)+)[^\s\"',)\]]+")
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class TokenCheck:
    """Decides whether a call's metadata carries a configured ingest token."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = tuple(token.encode() for token in tokens)

    @property
    def open(self) -> bool:
        """``True`` when no token is configured: every call may write."""
        return not self._tokens

    def refusal(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Reason | None:
        """``None`` when the call may write, else why not (TOKEN_REQUIRED or TOKEN_INVALID)."""
        if not self._tokens:
            return None
        presented: bytes | None = None
        for key, value in metadata or ():
            if key == "authorization":
                text = value.decode(errors="replace") if isinstance(value, bytes) else value
                scheme, _, credential = text.strip().partition(" ")
                if scheme.lower() == "bearer" and credential.strip():
                    presented = credential.strip().encode()
                break
        if presented is None:
            return Reason.TOKEN_REQUIRED
        matched = False
        for token in self._tokens:  # every token, always: no early exit to time
            matched |= hmac.compare_digest(presented, token)
        return None if matched else Reason.TOKEN_INVALID


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` without any ``Bearer`` value and without any of ``secrets``."""
    text = _BEARER.sub(lambda match: match.group(1) + REDACTED, text)
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


class TokenRedactor(logging.Filter):
    """A handler filter that redacts every record it passes (it never drops one)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self._secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = redact(message, self._secrets), ()
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value, self._secrets))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._secrets)
        return True


def install_redactor(secrets: Sequence[str]) -> None:
    """Put a :class:`TokenRedactor` on every handler of the root logger (configured by the entry point)."""
    redactor = TokenRedactor(secrets)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, TokenRedactor) for existing in handler.filters):
            handler.addFilter(redactor)
