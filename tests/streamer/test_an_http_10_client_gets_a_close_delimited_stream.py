"""An HTTP/1.0 client gets a close-delimited SSE body, not chunked encoding (issue 18, item 8).

HTTP/1.1 (RFC 9112, 6.1) forbids chunked transfer coding towards an HTTP/1.0 client, which cannot
parse it: the stream's body must be the events themselves, ending when the connection closes.
"""

from __future__ import annotations

import asyncio

from services import Generator, run_streamer


async def test_an_http_10_stream_is_close_delimited_and_ends_with_the_connection(generator: Generator) -> None:
    async with run_streamer(generator.address) as streamer:
        host, port = streamer.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"GET /v1/stream?series=cpu&window=1s HTTP/1.0\r\nHost: streamer\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 "), head
            lowered = head.lower()
            assert b"transfer-encoding" not in lowered and b"content-length" not in lowered, head
            assert b"connection: close" in lowered
            body = b""
            while body.count(b"\n\nevent: points") < 2:
                body += await asyncio.wait_for(reader.read(65536), 10)
            assert body.startswith(b"retry: "), body[:40]  # the events themselves, no chunk-size line
            streamer.state.hub.drain()
            while chunk := await asyncio.wait_for(reader.read(65536), 10):  # ends with the connection
                body += chunk
            assert b"server_shutdown" in body
        finally:
            writer.close()
