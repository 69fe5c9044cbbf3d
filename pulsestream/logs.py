"""Logging set-up shared by the services: one line per event, text or JSON.

Configured once, in each service's entry point, from ``LOG_LEVEL`` and
``LOG_FORMAT``. Modules log through ``logging.getLogger(__name__)`` with lazy
``%`` formatting; ``extra={...}`` fields appear as ``key=value`` pairs (text)
or JSON keys. When an OpenTelemetry span is active its ``trace_id`` and
``span_id`` are added, so a log line leads to its trace.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

# uvicorn adds ``color_message`` (the message with ANSI colours) to its records: noise in both formats.
_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}


def _span_ids() -> tuple[str, str] | None:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - telemetry is a dependency
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in record.__dict__.items() if k not in _RESERVED}
    ids = _span_ids()
    if ids:
        fields.setdefault("trace_id", ids[0])
        fields.setdefault("span_id", ids[1])
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # a filter may have rewritten it (the streamer redacts API keys there)
            entry["exception"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human-readable: ``time level logger: message key=value ...``."""

    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-5s " + service + " %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return f"{line} {extras}" if extras else line


def configure(level: str, fmt: str, service: str) -> None:
    """Route all logging to stderr at ``level`` in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter stays at INFO even when we debug our own flow.
    for noisy in ("asyncio", "grpc", "hpack", "httpcore", "httpx", "kopf.objects", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
