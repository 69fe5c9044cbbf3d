"""Server-Sent Events framing (pure): events, comments, the ``retry:`` field and the response headers.

Framing follows the WHATWG ``text/event-stream`` rules: ``event:``, ``id:``
and ``data:`` lines, a blank line ends an event, lines starting with ``:``
are comments (our heartbeats). Our JSON never contains a newline (orjson
without indentation), but :func:`frame` still splits multi-line data into
several ``data:`` lines so the framing is correct for any payload.

Frames are built once and shared: the fan-out hands the same ``bytes`` to
every client of a feed (:mod:`pulsestream_streamer.fanout.feed`), and the
per-connection writer lives with the HTTP layer
(:mod:`pulsestream_streamer.http.stream`).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "HEADERS",
    "HEARTBEAT",
    "comment",
    "error_frame",
    "event_head",
    "frame",
    "retry_frame",
]

#: Response headers of every stream. ``X-Accel-Buffering: no`` stops nginx from buffering;
#: no ``Content-Encoding``: compressing a stream would hold events back in the compressor.
HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

#: Sent when a stream has been idle for the heartbeat interval; keeps proxies from timing it out.
HEARTBEAT = b": heartbeat\n\n"


def frame(event: str | None, data: bytes, event_id: str | None = None) -> bytes:
    """One SSE event. ``data`` may hold newlines; each line becomes its own ``data:`` line."""
    head = b""
    if event:
        head += b"event: " + event.encode() + b"\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    return head + b"data: " + data + b"\n\n"


def event_head(event: str, event_id: str | None = None) -> bytes:
    """The start of an event whose one-line ``data`` follows in pieces; ``b"\\n\\n"`` ends it.

    For data written as it is encoded (a snapshot, see :mod:`~pulsestream_streamer.core.pieces`),
    which must then hold no newline (orjson never writes one).
    """
    head = b"event: " + event.encode() + b"\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    return head + b"data: "


def retry_frame(millis: int) -> bytes:
    """The ``retry:`` field: how long a browser waits before reconnecting."""
    return b"retry: %d\n\n" % millis


def comment(text: str) -> bytes:
    """A comment line (ignored by clients)."""
    return b": " + text.replace("\n", " ").encode() + b"\n\n"


def error_frame(code: str, message: str, **extra: Any) -> bytes:
    """An ``error`` event with a JSON body ``{"code", "message", ...}``; it carries no id."""
    return frame("error", orjson.dumps({"code": code, "message": message, **extra}))
