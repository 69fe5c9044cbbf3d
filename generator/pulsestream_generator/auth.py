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
the shared redacting filter (:mod:`pulsestream.redaction`), installed on the root handlers at start-up, removes
any configured token and any ``Bearer`` value from every record (message,
arguments, extra fields, traceback) in case another library logs one.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence

from pulsestream import redaction
from pulsestream.redaction import BEARER, REDACTED
from pulsestream.refusals import Reason

__all__ = ["REDACTED", "TokenCheck", "install_redactor", "redact"]


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


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` without any ``Bearer`` value and without any of ``secrets``."""
    return redaction.replace_secrets(BEARER.sub(lambda match: match.group(1) + REDACTED, text), secrets)


def install_redactor(secrets: Sequence[str]) -> None:
    """Put the redacting filter on every handler of the root logger (configured by the entry point)."""
    kept = tuple(secrets)
    redaction.install(redaction.RedactingFilter(redact, lambda: kept))
