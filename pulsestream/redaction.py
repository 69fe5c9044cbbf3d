"""Keeping secrets out of every log line: one handler filter for both services, each with its own forms.

A service configures what a secret looks like in text (a ``Bearer`` value, an
``api_key=`` query, a JWT, ...) as a ``scrub`` function and which values are
secrets (its keys, tokens, passwords) as a callable, so rotated secrets are
covered too. :func:`install` puts a :class:`RedactingFilter` on every handler of
the root logger; it rewrites each record before any formatter sees it: the
message with its arguments merged in (so a secret passed as ``%s`` is caught),
every string ``extra`` field and the traceback. A record whose format string is
broken is rewritten from its raw message rather than left for the handler to
report, since that report would print the arguments as they are.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable

__all__ = ["BEARER", "REDACTED", "RedactingFilter", "install", "replace_secrets"]

REDACTED = "<redacted>"
#: ``Bearer VALUE`` (also percent- or plus-encoded): the value a credential header carries.
BEARER = re.compile(r"(?i)(bearer(?:\s|%20|\+)+)[^\s\"',)\]]+")

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

#: What a service removes from a text, given the secrets in force.
Scrub = Callable[[str, tuple[str, ...]], str]


def replace_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each (non-empty) secret replaced by :data:`REDACTED`."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter that redacts every record it passes (it never drops one)."""

    def __init__(self, scrub: Scrub, secrets: Callable[[], Iterable[str]] = tuple) -> None:
        super().__init__()
        self._scrub = scrub
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = tuple(self._secrets())
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: redact what there is
            message = str(record.msg)
        record.msg, record.args = self._scrub(message, secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._scrub(record.exc_text, secrets)
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, self._scrub(value, secrets))
        return True


def install(redactor: RedactingFilter) -> RedactingFilter:
    """Add ``redactor`` to every handler of the root logger (after logging is configured).

    A handler that has a redacting filter already keeps it, so calling this again (tests start many
    apps in one process) does not stack filters.
    """
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
            handler.addFilter(redactor)
    return redactor
