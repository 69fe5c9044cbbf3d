"""A bound on the size of a request's head (request line and headers).

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
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["bounded_protocol", "too_large_response"]

#: After refusing, input is discarded for at most this long / this many bytes, then the connection closes.
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024 * 1024


def too_large_response(limit: int) -> bytes:
    """The complete HTTP response sent when a head exceeds ``limit`` bytes."""
    body = orjson.dumps(
        {
            "error": {
                "code": "request_head_too_large",
                "message": f"request line and headers exceed {limit} bytes",
            }
        }
    )
    return (
        b"HTTP/1.1 400 Bad Request\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


def bounded_protocol(limit: int) -> type[HttpToolsProtocol]:
    """An httptools protocol class that refuses request heads larger than ``limit`` bytes."""
    response = too_large_response(limit)

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _in_head = True
        _refused = False
        _discarded = 0

        def data_received(self, data: bytes) -> None:
            if self._refused:
                self._discarded += len(data)
                if self._discarded > LINGER_BYTES:
                    self.transport.close()
                return
            if self._in_head:
                self._head_bytes += len(data)
                if self._head_bytes > limit:
                    self._refuse()
                    return
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_bytes = 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_head = True  # the next request on this connection starts its own count
            super().on_message_complete()

        def _refuse(self) -> None:
            self._refused = True
            self.logger.warning("request head over %d bytes from %s: refused", limit, _peer(self.transport))
            self.transport.write(response)
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

    return BoundedHttpToolsProtocol


def _peer(transport: asyncio.BaseTransport) -> Any:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else peer
