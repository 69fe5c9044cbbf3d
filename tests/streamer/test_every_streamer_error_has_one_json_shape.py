"""Every error the streamer answers has one JSON shape, and what it describes of itself is right (issue 18, item 11).

404, 405, a refused CORS preflight and a missing static file used to answer FastAPI's ``{"detail": ...}``
or text/plain; ``/openapi.json`` and ``/redoc`` stayed open with ``STREAMER_PROTECT_HEALTH_AND_METRICS``;
the OpenAPI document called ``/v1/stream`` and ``/metrics`` JSON.
"""

from __future__ import annotations

import httpx
import pytest
from services import Generator, Streamer, run_streamer


def _error(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] and body["error"]["message"], body
    return dict(body["error"])


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("GET", "/static/missing.js", 404, "not_found"),
        ("POST", "/health", 405, "method_not_allowed"),
        ("DELETE", "/v1/series", 405, "method_not_allowed"),
    ],
)
async def test_starlettes_own_errors_have_our_json_shape(
    streamer: Streamer, method: str, path: str, status: int, code: str
) -> None:
    async with httpx.AsyncClient(base_url=streamer.url) as http:
        response = await http.request(method, path)
    assert response.status_code == status
    assert _error(response)["code"] == code


async def test_a_refused_cors_preflight_is_json_and_names_the_setting(generator: Generator) -> None:
    async with (
        run_streamer(generator.address, cors_allowed_origins="https://dash.example.com") as streamer,
        httpx.AsyncClient(base_url=streamer.url) as http,
    ):
        headers = {"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"}
        refused = await http.options("/v1/stream", headers=headers)
        allowed = await http.options("/v1/stream", headers={**headers, "Origin": "https://dash.example.com"})
    assert refused.status_code == 400
    assert "STREAMER_CORS_ALLOWED_ORIGINS" in _error(refused)["message"]
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://dash.example.com"


async def test_the_api_description_is_protected_with_health_and_metrics(generator: Generator) -> None:
    async with (
        run_streamer(generator.address, api_keys="k-1", protect_health_and_metrics="true") as streamer,
        httpx.AsyncClient(base_url=streamer.url) as http,
    ):
        for path in ("/openapi.json", "/redoc", "/health", "/metrics"):
            assert (await http.get(path)).status_code == 401, path
        assert (await http.get("/openapi.json", headers={"X-API-Key": "k-1"})).status_code == 200


async def test_the_openapi_document_says_what_stream_and_metrics_answer(streamer: Streamer) -> None:
    async with httpx.AsyncClient(base_url=streamer.url) as http:
        document = (await http.get("/openapi.json")).json()
    stream = document["paths"]["/v1/stream"]["get"]
    assert list(stream["responses"]["200"]["content"]) == ["text/event-stream"]
    parameters = {p["name"]: p for p in stream["parameters"]}
    assert {"series", "resolution", "window", "maxPoints", "format", "lastEventId"} <= set(parameters)
    assert parameters["format"]["schema"]["enum"] == ["d3", "table", "columns"]
    metrics = document["paths"]["/metrics"]["get"]
    assert next(iter(metrics["responses"]["200"]["content"])).startswith("text/plain")
