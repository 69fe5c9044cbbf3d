"""Server-Sent Events framing (pure): events, comments, the ``retry:`` field and the response headers.

Framing follows the WHATWG ``text/event-stream`` rules: ``event:``, ``id:``
and ``data:`` lines, a blank line ends an event, lines starting with ``:``
are comments (our heartbeats). Our JSON never contains a newline (orjson
without indentation), but :func:`frame` still splits multi-line data into
several ``data:`` lines so the framing is correct for any payload.

Two rules come from third-party clients (issue 16):

- The server's own trouble and notice event is named ``notice``
  (:data:`NOTICE`), never ``error``: ``EventSource`` fires ``error`` for its
  connection errors, so an ``event: error`` reached every ``onerror`` handler
  (npm ``eventsource`` reported ``max_lifetime`` as a connection error while
  the connection was still open).
- ``retry:`` is a field of an event's block, never a block of its own: a
  block with no ``data`` is yielded as an empty message by httpx-sse and
  dropped, retry and all, by sseclient-py. It rides in the snapshot's block
  and in the notices that end a stream. ``EventSource`` does not expose it,
  so those events repeat it as ``retryMs`` in their JSON for clients that
  schedule their own reconnects (``pulsestream.js``).

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
    "NOTICE",
    "comment",
    "event_head",
    "frame",
    "notice_frame",
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

#: Name of the server's notice event: upstream trouble, degradation, the end of a stream (never ``error``).
NOTICE = "notice"


def _retry(retry_ms: int | None) -> bytes:
    return b"" if retry_ms is None else b"retry: %d\n" % retry_ms


def frame(event: str | None, data: bytes, event_id: str | None = None, retry_ms: int | None = None) -> bytes:
    """One SSE event. ``data`` may hold newlines; each line becomes its own ``data:`` line.

    ``retry_ms`` puts the ``retry:`` field first in the event's own block.
    """
    head = _retry(retry_ms)
    if event:
        head += b"event: " + event.encode() + b"\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    return head + b"data: " + data + b"\n\n"


def event_head(event: str, event_id: str | None = None, retry_ms: int | None = None) -> bytes:
    """The start of an event whose one-line ``data`` follows in pieces; ``b"\\n\\n"`` ends it.

    For data written as it is encoded (a snapshot, see :mod:`~pulsestream_streamer.core.pieces`),
    which must then hold no newline (orjson never writes one). ``retry_ms`` puts the
    ``retry:`` field first in this event's block.
    """
    head = _retry(retry_ms) + b"event: " + event.encode() + b"\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    return head + b"data: "


def comment(text: str) -> bytes:
    """A comment line (ignored by clients)."""
    return b": " + text.replace("\n", " ").encode() + b"\n\n"


def notice_frame(code: str, message: str, *, retry_ms: int | None = None, **extra: Any) -> bytes:
    """A ``notice`` event with a JSON body ``{"code", "message", ...}``; it carries no id.

    With ``retry_ms`` (a notice that ends the stream) the block starts with ``retry:``
    and the body adds ``retryMs``, the same value, for clients that cannot read the field.
    """
    body = {"code": code, "message": message, **extra}
    if retry_ms is not None:
        body["retryMs"] = retry_ms
    return frame(NOTICE, orjson.dumps(body), retry_ms=retry_ms)
