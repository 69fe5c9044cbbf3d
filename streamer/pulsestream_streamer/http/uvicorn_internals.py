"""Every uvicorn internal the streamer relies on, in one place, for the version range it was written for.

The SSE fast paths reach past ASGI into uvicorn's HTTP/1.1 connection
(``httptools_impl.RequestResponseCycle``, the object behind the ``send``
callable uvicorn hands the app):

- ``send.__self__`` is the cycle; its ``transport`` (the asyncio transport),
  ``flow.write_paused`` (uvicorn's flow control), ``disconnected``,
  ``chunked_encoding`` and ``scope`` are read (:class:`ServerConnection`), and
  for an HTTP/1.0 client ``chunked_encoding`` and ``expected_content_length``
  are set so the body is close-delimited, not chunked;
- the transport's write buffer limit is lowered, pre-framed chunks are
  written to it directly, and a stalled peer's transport is aborted;
- :func:`bounded_protocol` subclasses ``HttpToolsProtocol`` to bound the
  request head's size and the time it may take (uvicorn's httptools parser
  has no size limit of its own, and uvicorn arms no timer before a request is
  complete), and to answer a request it cannot parse in our JSON error shape.

None of this is public API. ``pyproject.toml`` bounds uvicorn's version to
the range these were checked against, :class:`ServerConnection` checks the
shape of what it finds and returns ``None`` for anything else (another
server, another uvicorn), and every stream counts which path served it
(``pulsestream_streamer_sse_connections_by_path_total{path}``), so a test
(``tests/streamer/test_streamer_sse_takes_the_uvicorn_fast_path.py``) fails when the fast path
silently falls back.

Bounding the request head
    uvicorn's httptools protocol accepts a head of any size: an 8 MB header is
    read into memory before the application sees the request, and a client can
    make the streamer buffer as much as it likes. Proxies bound this (nginx:
    ``large_client_header_buffers``, 400 "Request Header Or Cookie Too Large");
    the streamer does the same at the protocol, before any parsing work is done
    on the excess: bytes that arrive while a request's head is still incomplete
    are counted, and past the limit the connection gets a ``400`` with a JSON
    body. Like nginx's lingering close, the connection then discards what the
    client is still sending for a short, bounded while before closing, so the
    client reads the answer instead of a connection reset.

    The count is per request: it starts when the previous request's head is
    complete (or the connection opens) and stops at the end of the head. The
    streamer serves only ``GET`` requests, so a chunk that carries the end of a
    head carries no body to be miscounted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["ServerConnection", "aborter", "bounded_protocol", "error_response", "too_large_response"]

#: After refusing, input is discarded for at most this long / this many bytes, then the connection closes.
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024 * 1024
#: The "content length" of a close-delimited body, as uvicorn's cycle counts it down: never reached.
_UNBOUNDED = 1 << 62


def error_response(status: bytes, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 error response with the JSON body every error of ours has, closing the connection."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


def too_large_response(limit: int) -> bytes:
    """The complete HTTP response sent when a head exceeds ``limit`` bytes."""
    message = f"request line and headers exceed {limit} bytes"
    return error_response(b"400 Bad Request", "request_head_too_large", message)


def bounded_protocol(limit: int, head_timeout: float = 10.0) -> type[HttpToolsProtocol]:
    """An httptools protocol class that bounds a request head's size (``limit`` bytes) and time (seconds).

    uvicorn arms no timer until a request is complete, so a connection that never sends a whole
    head (slowloris, or a socket opened and left idle) would hold a slot of ``limit_concurrency``
    forever. Like nginx's ``client_header_timeout``, a head must be complete ``head_timeout``
    seconds after the connection opens or the next request's first byte arrives; else the
    connection gets ``408`` with a JSON body and is closed. A response in progress (an SSE
    stream) is never timed: the clock only runs while the server waits for a request.
    """
    too_large = too_large_response(limit)
    too_slow = error_response(
        b"408 Request Timeout", "request_timeout", f"the request head was not complete within {head_timeout:g}s"
    )

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _in_head = True
        _refused = False
        _discarded = 0
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                self._discarded += len(data)
                if self._discarded > LINGER_BYTES:
                    self.transport.close()
                return
            if self._in_head:
                if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
                    self._arm_head_timer()  # a new request begins on a kept-alive connection
                self._head_bytes += len(data)
                if self._head_bytes > limit:
                    self._refuse(too_large, f"request head over {limit} bytes")
                    return
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_bytes = 0
            self._disarm_head_timer()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_head = True  # the next request on this connection starts its own count
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:
            # uvicorn answers a request it cannot parse in text/plain; ours is the JSON shape of every error.
            self._disarm_head_timer()
            self.transport.write(error_response(b"400 Bad Request", "bad_request", msg))
            self.transport.close()

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(head_timeout, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self._in_head and not self._refused and not self.transport.is_closing():
                self.logger.debug("request head not complete within %gs from %s", head_timeout, _peer(self.transport))
                self._refused = True
                self.transport.write(too_slow)
                self.transport.close()

        def _refuse(self, response: bytes, why: str) -> None:
            self._refused = True
            self._disarm_head_timer()
            self.logger.warning("%s from %s: refused", why, _peer(self.transport))
            self.transport.write(response)
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

    return BoundedHttpToolsProtocol


def _peer(transport: asyncio.BaseTransport) -> Any:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else peer


class ServerConnection:
    """uvicorn's connection behind an ASGI ``send``, as far as the fast paths use it.

    With it, a connection needs no second task waiting on ``receive()`` (about 2 KB per idle
    connection): :meth:`disconnected` is checked after each write and by the registry sweep
    every ``sweep_interval``; and flushes may write pre-framed chunks straight to its
    transport (:meth:`write_now`) while its flow control says the socket is writable.
    """

    __slots__ = ("_close_delimited", "_cycle", "_flow", "_transport")

    def __init__(self, cycle: Any, transport: Any, flow: Any) -> None:
        self._cycle = cycle
        self._transport = transport
        self._flow = flow
        self._close_delimited = False

    @classmethod
    def of(cls, send: Callable[..., Awaitable[None]], write_buffer: int) -> ServerConnection | None:
        """The connection behind ``send`` when it has what the fast paths use, else None.

        It also lowers the connection's transport buffer to ``write_buffer`` bytes (asyncio's
        default is 64 KiB): past it the server's ``send`` waits, so a peer that stopped reading
        shows up as a blocked writer (then a slow consumer) after a few KB instead of 64, and
        holds at most that much memory in user space.
        """
        cycle: Any = getattr(send, "__self__", None)
        if not isinstance(getattr(cycle, "disconnected", None), bool):
            return None
        transport = getattr(cycle, "transport", None)
        flow = getattr(cycle, "flow", None)
        if (
            transport is None
            or not hasattr(transport, "write")
            or not isinstance(getattr(flow, "write_paused", None), bool)
        ):
            return None
        # A peer gone before the response started has a closed transport, which uvloop refuses to configure.
        if write_buffer and hasattr(transport, "set_write_buffer_limits") and not transport.is_closing():
            transport.set_write_buffer_limits(high=write_buffer)
        return cls(cycle, transport, flow)

    def disconnected(self) -> bool:
        """Whether uvicorn saw the peer go."""
        return bool(self._cycle.disconnected)

    @property
    def http_10(self) -> bool:
        """Whether the request is HTTP/1.0 (which has no chunked transfer encoding)."""
        scope = getattr(self._cycle, "scope", None)
        return isinstance(scope, dict) and scope.get("http_version") == "1.0"

    def delimit_by_close(self) -> None:
        """Before the response starts: no ``transfer-encoding: chunked`` (RFC 9112 forbids it towards an
        HTTP/1.0 client), the body ends when the connection closes.

        uvicorn's httptools cycle always chunks a response without ``content-length``; deciding the
        framing first and allowing an unbounded body makes it write the body as is. uvicorn already
        closes HTTP/1.0 connections at the end of a response.
        """
        self._cycle.chunked_encoding = False
        self._cycle.expected_content_length = _UNBOUNDED
        self._close_delimited = True

    def ending(self) -> None:
        """Just before the last (empty) body message: a close-delimited body is complete as it is."""
        if self._close_delimited:
            self._cycle.expected_content_length = 0

    @property
    def chunked_get(self) -> bool:
        """A ``GET`` answered with chunked transfer encoding: the framing :meth:`write_now` chunks assume."""
        scope = getattr(self._cycle, "scope", None)
        return self._cycle.chunked_encoding is True and isinstance(scope, dict) and scope.get("method") == "GET"

    def write_now(self, chunk: bytes) -> bool:
        """Write a pre-framed chunk to the transport if it can take it now; say whether it did."""
        if self._flow.write_paused or self._cycle.disconnected:
            return False
        self._transport.write(chunk)
        return True


def aborter(send: Callable[..., Awaitable[None]]) -> Callable[[], None] | None:
    """A way to cut the connection behind ``send`` when its peer stopped reading, if the server exposes one."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    abort = getattr(transport, "abort", None)
    return abort if callable(abort) else None
