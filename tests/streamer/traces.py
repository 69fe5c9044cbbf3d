"""The spans and JSON logs of services run with tracing to stdout, for the tracing tests.

With ``OTEL_TRACES_EXPORTER=console`` a service prints each finished span as one JSON line on stdout,
which the :class:`~services.Stack` keeps in a file of its own (:meth:`~services.Service.stdout_records`);
``LOG_FORMAT=json`` makes its log lines JSON too (:meth:`~services.Service.log_records`).
"""

from __future__ import annotations

from typing import Any

from services import Service

#: Spans to stdout, JSON logs at debug level: everything the tracing tests read.
TRACING_ENV = {"OTEL_TRACES_EXPORTER": "console", "LOG_FORMAT": "json", "LOG_LEVEL": "debug"}


def spans(service: Service) -> list[dict[str, Any]]:
    """Every span the service has finished (and flushed) so far."""
    return service.stdout_records()


def hex_id(value: str | None) -> str:
    """Span JSON writes ids as ``0x...``; logs and event meta write bare hex."""
    return (value or "").removeprefix("0x")
