"""Minimal HTTP/1.1 response decoding for the load client.

Pure byte-in, values-out classes with no I/O, so the load client's
per-connection cost stays a few C-level ``bytes`` operations per chunk and
the parsing is tested directly. Only what the two servers under test send is
supported: a status line and headers, then a body either chunked
(uvicorn streams responses without a length that way) or read to close. The
SSE in that body is read by the tests' parser (``tests/support/sse.py``:
``EventStreamParser``), built for the same per-chunk cost.
"""

from __future__ import annotations

from dataclasses import dataclass

_MAX_HEAD = 64 * 1024


class WireError(ValueError):
    """The server sent bytes this client cannot make sense of."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """The status and the headers (lower-cased names) of an HTTP response."""

    status: int
    headers: dict[str, str]

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()


def parse_head(buffer: bytes) -> tuple[ResponseHead, bytes] | None:
    """Split a response head off ``buffer``; None until the blank line has arrived.

    Returns the head and the body bytes that followed it in ``buffer``.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > _MAX_HEAD:
            raise WireError("response head larger than 64 KiB")
        return None
    lines = buffer[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise WireError(f"not an HTTP/1.x status line: {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return ResponseHead(int(parts[1]), headers), buffer[end + 4 :]


class ChunkedDecoder:
    """Incremental decoder of ``Transfer-Encoding: chunked`` bodies.

    :meth:`feed` takes whatever the socket delivered and returns the body
    bytes decoded so far; :attr:`done` turns true at the last (empty) chunk.
    """

    __slots__ = ("_buffer", "_remaining", "_trailer_crlf", "done")

    def __init__(self) -> None:
        self._buffer = b""
        self._remaining = 0  # data bytes of the current chunk still to come
        self._trailer_crlf = False  # the CRLF after a chunk's data is due
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        pos = 0
        size = len(buffer)
        while not self.done:
            if self._remaining:
                take = min(self._remaining, size - pos)
                if take == 0:
                    break
                out.append(buffer[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining:
                    break
                self._trailer_crlf = True
            if self._trailer_crlf:
                if size - pos < 2:
                    break
                if buffer[pos : pos + 2] != b"\r\n":
                    raise WireError("chunk data not followed by CRLF")
                pos += 2
                self._trailer_crlf = False
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                if size - pos > 1024:
                    raise WireError("chunk size line too long")
                break
            try:
                length = int(buffer[pos:end].split(b";", 1)[0], 16)
            except ValueError:
                raise WireError(f"bad chunk size line {buffer[pos:end][:40]!r}") from None
            pos = end + 2
            if length == 0:
                self.done = True
            self._remaining = length
        self._buffer = buffer[pos:]
        return b"".join(out)
