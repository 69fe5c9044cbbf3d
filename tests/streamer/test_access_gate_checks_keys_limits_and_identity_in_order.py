"""The access gate as ASGI middleware, in front of a minimal app: order of checks, identity, slot release."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pulsestream_streamer.access.clientid import ClientIdentifier, parse_networks
from pulsestream_streamer.access.gate import AccessGate, AccessMiddleware
from pulsestream_streamer.access.keys import KeyStore
from pulsestream_streamer.access.ratelimit import RateLimiter
from starlette.types import Receive, Scope, Send

from pulsestream.spec import RateLimit

seen: list[dict[str, Any]] = []


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers 200 with the client id the gate put in the request state; ``/v1/stream?fail=1`` raises."""
    seen.append(dict(scope.get("state", {})))
    if scope["query_string"] == b"fail=1":
        raise RuntimeError("route failed")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def client(gate: AccessGate, peer: str = "203.0.113.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=AccessMiddleware(app, gate), client=(peer, 5000))
    return httpx.AsyncClient(transport=transport, base_url="http://streamer")


def gate(keys: tuple[str, ...] = ("k-1", "k-2"), burst: int = 100, streams: int = 4, proxies: str = "") -> AccessGate:
    limits = RateLimit(requests_per_second=0.001, burst=burst, max_streams_per_client=streams)
    return AccessGate(KeyStore(keys), ClientIdentifier(parse_networks(proxies)), RateLimiter(limits))


async def test_the_gate_leaves_other_paths_alone() -> None:
    async with client(gate()) as http:
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/health")).status_code == 200


async def test_the_route_sees_an_opaque_client_id_never_the_key() -> None:
    seen.clear()
    async with client(gate()) as http:
        assert (await http.get("/v1/series", headers={"X-API-Key": "k-1"})).status_code == 200
    assert seen[-1]["client_id"].startswith("key-") and "k-1" not in seen[-1]["client_id"]


async def test_wrong_keys_are_throttled_by_address_before_the_key_is_checked() -> None:
    async with client(gate(burst=2)) as http:
        statuses = [(await http.get("/v1/series", params={"api_key": "guess"})).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
        assert (await http.get("/v1/series", params={"api_key": "k-2"})).status_code == 200  # its own bucket


async def test_in_open_mode_any_key_still_counts_as_the_address() -> None:
    async with client(gate(keys=(), burst=2)) as http:
        statuses = [(await http.get("/v1/series", params={"api_key": f"x{n}"})).status_code for n in range(3)]
    assert statuses == [200, 200, 429]


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() -> None:
    async with client(gate(keys=(), burst=1, proxies="10.0.0.0/8"), peer="10.0.0.2") as http:
        first = await http.get("/v1/series", headers={"X-Forwarded-For": "198.51.100.1"})
        second = await http.get("/v1/series", headers={"X-Forwarded-For": "198.51.100.2"})
        again = await http.get("/v1/series", headers={"X-Forwarded-For": "198.51.100.1"})
    assert (first.status_code, second.status_code, again.status_code) == (200, 200, 429)


async def test_a_stream_slot_is_released_even_when_the_route_fails() -> None:
    guard = gate(streams=1)
    async with client(guard) as http:
        with pytest.raises(RuntimeError):
            await http.get("/v1/stream", params={"fail": "1"}, headers={"X-API-Key": "k-1"})
        assert (await http.get("/v1/stream", headers={"X-API-Key": "k-1"})).status_code == 200
    assert guard.limiter.streams(seen[-1]["client_id"]) == 0


async def test_cors_preflights_pass_untouched() -> None:
    headers = {"Origin": "https://dash.example", "Access-Control-Request-Method": "GET"}
    async with client(gate()) as http:
        assert (await http.options("/v1/stream", headers=headers)).status_code == 200
        assert (await http.options("/v1/stream")).status_code == 401  # not a preflight


async def test_live_limits_are_picked_up_on_the_next_request() -> None:
    current = {"limits": RateLimit(requests_per_second=0.001, burst=1, max_streams_per_client=1)}
    guard = AccessGate(KeyStore(), ClientIdentifier(), RateLimiter(current["limits"]), lambda: current["limits"])
    async with client(guard) as http:
        assert [(await http.get("/v1/series")).status_code for _ in range(2)] == [200, 429]
        current["limits"] = RateLimit(requests_per_second=0.001, burst=3, max_streams_per_client=1)
        assert [(await http.get("/v1/series")).status_code for _ in range(3)] == [200, 200, 429]
