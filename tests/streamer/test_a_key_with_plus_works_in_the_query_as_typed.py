"""A key with ``+`` works in ``?api_key=`` as typed and percent-encoded (issue 18, item 9).

Form decoding turns ``+`` into a space, so ``?api_key=a+b`` used to arrive as ``a b`` and get a 401,
although ``+`` is in the documented key alphabet and a key never holds a space.
"""

from __future__ import annotations

import httpx
import pytest
from pulsestream_streamer.access.clientid import ClientIdentifier
from pulsestream_streamer.access.gate import AccessGate, AccessMiddleware
from pulsestream_streamer.access.keys import KeyStore, credential_query
from pulsestream_streamer.access.ratelimit import RateLimiter
from starlette.types import Receive, Scope, Send

from pulsestream.spec import RateLimit

KEY = "A+b/c+d=="


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_plus_is_kept_and_percent_escapes_are_decoded() -> None:
    assert credential_query(b"api_key=A+b%2Fc%2Bd%3D%3D&series=cpu") == {"api_key": KEY, "series": "cpu"}


@pytest.mark.parametrize("query", ["api_key=A+b/c+d==", "api_key=A%2Bb%2Fc%2Bd%3D%3D", "api_key=A+b%2Fc%2Bd=="])
async def test_a_key_with_plus_signs_is_accepted_in_the_query_however_it_is_encoded(query: str) -> None:
    gate = AccessGate(KeyStore((KEY,)), ClientIdentifier(), RateLimiter(RateLimit(burst=100)))
    transport = httpx.ASGITransport(app=AccessMiddleware(ok, gate), client=("203.0.113.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://streamer") as http:
        assert (await http.get(f"/v1/series?{query}")).status_code == 200
        assert (await http.get("/v1/series?api_key=A%20b/c%20d==")).status_code == 401  # a space is not a plus
