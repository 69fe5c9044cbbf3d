"""Idle and half-sent connections cannot hold the streamer's slots; its error answers are JSON (issue 18, items 1, 11).

uvicorn arms no timer until a request is complete, so with ``STREAMER_LIMIT_CONCURRENCY=10`` ten idle
sockets once made ``/health`` answer 503 for as long as they stayed open (slowloris). A request head
must now be complete within ``STREAMER_REQUEST_HEAD_TIMEOUT``; streams are never timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket

import httpx
import pytest
from loopback import wait_until
from pulsestream_streamer.http.server import FD_RESERVE, connection_budget
from services import Generator, run_streamer
from sse import sse


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def _health(url: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(url + "/health")).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.fault
async def test_idle_sockets_are_closed_after_the_head_timeout_and_free_their_slots(generator: Generator) -> None:
    async with run_streamer(generator.address, limit_concurrency="10", request_head_timeout="1s") as streamer:
        idle = [_connect(streamer.url) for _ in range(10)]
        try:
            # Every slot is held: uvicorn refuses more (this is what lasted forever before).
            assert await _health(streamer.url) in (0, 503)
            answers = await asyncio.gather(*(asyncio.to_thread(_read_all, sock) for sock in idle))
            assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[0][:80]
            body = json.loads(answers[0].split(b"\r\n\r\n", 1)[1])
            assert body["error"]["code"] == "request_timeout"

            async def health_ok() -> bool:
                return await _health(streamer.url) == 200

            await wait_until(health_ok, timeout=5, what="/health to get a slot again")
        finally:
            for sock in idle:
                sock.close()


@pytest.mark.fault
async def test_a_half_sent_head_gets_408_and_a_whole_one_is_served(generator: Generator) -> None:
    async with run_streamer(generator.address, request_head_timeout="1s") as streamer:
        slow = _connect(streamer.url)
        try:
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: streamer\r\nX-Slow: ")  # and then nothing
            answer = await asyncio.to_thread(_read_all, slow)
        finally:
            slow.close()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"content-type: application/json" in answer
        assert await _health(streamer.url) == 200


async def test_a_stream_outlives_the_head_timeout(generator: Generator) -> None:
    async with (
        run_streamer(generator.address, request_head_timeout="1s") as streamer,
        sse(streamer.url + "/v1/stream?series=cpu&window=1s") as reader,
    ):
        first = await reader.next()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.5
        while loop.time() < deadline:
            await reader.next()  # points keep coming past the 1 s head timeout
        assert first.event == "snapshot"


@pytest.mark.fuzz
async def test_an_unparsable_request_is_answered_in_json(generator: Generator) -> None:
    async with run_streamer(generator.address) as streamer:
        sock = _connect(streamer.url)
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost streamer\r\n\r\n")  # a header without a colon
            answer = await asyncio.to_thread(_read_all, sock)
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 400 ")
        head, body = answer.split(b"\r\n\r\n", 1)
        assert b"content-type: application/json" in head
        assert json.loads(body)["error"]["code"] == "bad_request"


def test_the_concurrency_limit_leaves_room_below_the_descriptor_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard file-descriptor limit to stay below")
    with contextlib.ExitStack() as restore:
        restore.callback(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1000, hard), hard))
        budget = connection_budget(10 * hard)
        assert budget == hard - FD_RESERVE, "the soft limit is raised to the hard one, then a reserve is kept"
        assert connection_budget(100) == 100
