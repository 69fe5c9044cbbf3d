"""API keys and per-client limits on a real streamer in front of a real generator."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from loopback import wait_for
from services import Generator, Stack, StreamerProcess

pytestmark = pytest.mark.e2e

KEYS = ["alpha-key-0001", "beta-key-0002", "gamma-key-0003", "delta-key-0004", "eps-key-0005"]
FILE_KEY = "file-key-0001"
WRONG = "wrong-key-9999"
GENEROUS = {"rateLimit": {"requestsPerSecond": 200, "burst": 200, "maxStreamsPerClient": 4}}


@pytest.fixture(scope="module")
def generator(module_stack: Stack) -> Generator:
    return module_stack.generator({"frequency": "100ms"})


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The streamer's API key file, as a mounted Secret."""
    path = tmp_path_factory.mktemp("secret") / "api-keys"
    path.write_text(f"# mounted from a Secret\n{FILE_KEY}\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def streamer(module_stack: Stack, generator: Generator, key_file: Path) -> StreamerProcess:
    return module_stack.streamer(
        generator,
        GENEROUS,
        STREAMER_API_KEYS=",".join(KEYS),
        STREAMER_API_KEYS_FILE=str(key_file),
        LOG_LEVEL="debug",
    )


def set_limits(streamer: StreamerProcess, document: dict[str, Any]) -> None:
    """Write the live settings and wait until /health reports them in force."""
    version = streamer.version_of(document)
    streamer.write_settings(document)
    wait_for(lambda: streamer.health().get("config_version") == version, what=f"settings version {version}")


@pytest.fixture
def limits(streamer: StreamerProcess) -> Iterator[Any]:
    """Set live limits for one test; the generous ones come back afterwards."""
    yield lambda document: set_limits(streamer, document)
    set_limits(streamer, GENEROUS)


def get(streamer: StreamerProcess, path: str = "/v1/series", **kwargs: Any) -> httpx.Response:
    return httpx.get(streamer.url + path, timeout=10.0, **kwargs)


WAYS: dict[str, Callable[[str], dict[str, Any]]] = {
    "bearer": lambda key: {"headers": {"Authorization": f"Bearer {key}"}},
    "header": lambda key: {"headers": {"X-API-Key": key}},
    "query": lambda key: {"params": {"api_key": key}},
}


def test_without_a_key_v1_answers_401_with_json_and_a_bearer_challenge(streamer: StreamerProcess) -> None:
    response = get(streamer)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("way", sorted(WAYS))
def test_a_wrong_key_is_refused_and_the_right_one_let_in_by_each_way(streamer: StreamerProcess, way: str) -> None:
    refused = get(streamer, **WAYS[way](WRONG))
    assert refused.status_code == 401
    assert WRONG not in refused.text
    accepted = get(streamer, **WAYS[way](KEYS[0]))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()  # the series list, not an error body


def test_health_and_metrics_are_open_by_default(streamer: StreamerProcess) -> None:
    assert get(streamer, "/health").status_code in (200, 503)
    assert get(streamer, "/metrics").status_code == 200


def test_a_stream_needs_a_key_too_and_the_query_parameter_works_for_eventsource(streamer: StreamerProcess) -> None:
    params = {"series": "cpu"}
    assert get(streamer, "/v1/stream", params=params).status_code == 401
    with httpx.stream(
        "GET", streamer.url + "/v1/stream", params={**params, "api_key": KEYS[1]}, timeout=10.0
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")


def test_keys_in_the_key_file_rotate_without_a_restart(streamer: StreamerProcess, key_file: Path) -> None:
    assert get(streamer, **WAYS["bearer"](FILE_KEY)).status_code == 200
    rotated = "file-key-0002"
    tmp = key_file.with_suffix(".tmp")
    tmp.write_text(f"{rotated}\n", encoding="utf-8")
    os.replace(tmp, key_file)
    wait_for(lambda: get(streamer, **WAYS["bearer"](rotated)).status_code == 200, what="the rotated key")
    assert get(streamer, **WAYS["bearer"](FILE_KEY)).status_code == 401
    assert get(streamer, **WAYS["bearer"](KEYS[0])).status_code == 200  # the environment's keys stay
    pid = streamer.proc.pid
    assert streamer.alive() and streamer.proc.pid == pid


def test_over_the_request_rate_a_client_gets_429_with_retry_after_and_others_do_not(
    streamer: StreamerProcess, limits: Any
) -> None:
    limits({"rateLimit": {"requestsPerSecond": 0.2, "burst": 3, "maxStreamsPerClient": 4}})
    busy, other = WAYS["header"](KEYS[2]), WAYS["header"](KEYS[3])
    statuses = [get(streamer, **busy).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = get(streamer, **busy)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"
    assert get(streamer, **other).status_code == 200


def test_a_limit_changed_live_in_the_settings_file_takes_effect(streamer: StreamerProcess, limits: Any) -> None:
    client = WAYS["bearer"](KEYS[4])
    limits({"rateLimit": {"requestsPerSecond": 0.2, "burst": 2, "maxStreamsPerClient": 4}})
    assert [get(streamer, **client).status_code for _ in range(3)] == [200, 200, 429]
    # burst 100, not below the rate: both services refuse a burst below the rate (BurstBelowRate), as the operator does
    limits({"rateLimit": {"requestsPerSecond": 100, "burst": 100, "maxStreamsPerClient": 4}})
    assert [get(streamer, **client).status_code for _ in range(10)] == [200] * 10


def test_over_the_stream_cap_a_client_gets_429_and_others_still_stream(streamer: StreamerProcess, limits: Any) -> None:
    limits({"rateLimit": {"requestsPerSecond": 100, "burst": 100, "maxStreamsPerClient": 1}})
    url = streamer.url + "/v1/stream"
    first = {"series": "cpu", "api_key": KEYS[0]}
    with (
        httpx.Client(timeout=10.0) as one,
        httpx.Client(timeout=10.0) as two,
        one.stream("GET", url, params=first) as held,
    ):
        assert held.status_code == 200
        chunks = held.iter_raw()  # keep a reference: a dropped iterator closes the connection
        next(chunks)  # the stream is really open (retry: line, snapshot)
        refused = two.get(url, params=first)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "too_many_streams"
        assert "STREAMER_MAX_STREAMS_PER_CLIENT" in refused.json()["error"]["message"]  # says what to change
        with two.stream("GET", url, params={"series": "cpu", "api_key": KEYS[1]}) as other:
            assert other.status_code == 200
        assert next(chunks)  # the held stream was never cut

    # Once the held stream is gone, the client may open one again.
    def reopened() -> bool:
        with httpx.stream("GET", url, params=first, timeout=10.0) as again:
            return again.status_code == 200

    wait_for(reopened, what="the stream slot to be released")


def test_keys_never_appear_in_the_logs_not_even_the_access_log(streamer: StreamerProcess) -> None:
    for way in WAYS.values():
        get(streamer, **way(KEYS[0]))
        get(streamer, **way(WRONG))
    with httpx.stream(
        "GET", streamer.url + "/v1/stream", params={"series": "cpu", "api_key": KEYS[1]}, timeout=10.0
    ) as response:
        chunks = response.iter_raw()
        next(chunks)
    logs = streamer.log_text()
    # The access log is on and saw the requests, so a leak would have shown.
    assert re.search(r"GET /v1/series\?api_key=<redacted>", logs), logs[-3000:]
    for secret in [*KEYS, FILE_KEY, "file-key-0002", WRONG]:
        assert secret not in logs


ORIGIN = "https://dash.example"


@pytest.fixture(scope="module")
def guarded(module_stack: Stack, generator: Generator) -> StreamerProcess:
    """A streamer that also guards /health and /metrics, allows one browser origin, and logs JSON lines."""
    return module_stack.streamer(
        generator,
        GENEROUS,
        STREAMER_API_KEYS=KEYS[0],
        STREAMER_PROTECT_HEALTH_AND_METRICS="true",
        STREAMER_CORS_ALLOWED_ORIGINS=ORIGIN,
        LOG_LEVEL="debug",
        LOG_FORMAT="json",
    )


@pytest.mark.parametrize("path", ["/health", "/metrics"])
def test_health_and_metrics_need_a_key_when_the_setting_says_so(guarded: StreamerProcess, path: str) -> None:
    assert get(guarded, path).status_code == 401
    assert get(guarded, path, **WAYS["bearer"](KEYS[0])).status_code == 200


def test_cors_answers_preflights_without_a_key_and_refusals_carry_cors_headers(guarded: StreamerProcess) -> None:
    preflight = httpx.options(
        guarded.url + "/v1/stream",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-api-key",
        },
        timeout=10.0,
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    refused = get(guarded, headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN  # the page can read why it was refused
    stranger = get(guarded, headers={"Origin": "https://evil.example", **WAYS["header"](KEYS[0])["headers"]})
    assert "access-control-allow-origin" not in stranger.headers


def test_keys_never_appear_in_json_logs_either(guarded: StreamerProcess) -> None:
    for way in WAYS.values():
        get(guarded, **way(KEYS[0]))
        get(guarded, **way(WRONG))
    lines = [json.loads(line) for line in guarded.log_text().splitlines() if line.startswith("{")]
    access = [line["message"] for line in lines if line["logger"] == "uvicorn.access"]
    assert any("api_key=<redacted>" in message for message in access), access
    text = guarded.log_text()
    assert KEYS[0] not in text and WRONG not in text
