"""Hostile input: property-based fuzzing of every streamer route and every generator RPC, and crafted abuse.

Against one real generator and one real streamer process (shared by this module):

- HTTP: hypothesis generates methods, paths, query strings and headers for every route (``/``, ``/static``,
  ``/v1/series``, ``/v1/stream``, ``/health``, ``/metrics``, ``/openapi.json`` and paths that do not
  exist). Never a 5xx; every 4xx has a JSON error body; a 400 from ``/v1/stream`` names the parameter; a
  stream that starts is an event stream whose first event is the snapshot.
- Cursors: truncated, garbage, forged and far-future ``Last-Event-ID`` values give the documented
  ``"reset": true`` snapshot (or a 400 for an id too long to be one), within bounded time.
- Thousands of series names, and huge headers: a clear 400 quickly, and the process stays small.
- gRPC: hypothesis generates SubscribeRequest and RandomService requests with out-of-range, empty, huge and
  unknown values: INVALID_ARGUMENT (or a normal stream for a valid request), never another error; garbage
  bytes and oversized messages are refused by gRPC itself. The generator stays SERVING throughout.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pulsestream_streamer.core import cursor as cursors
from services import Generator, Stack, StreamerProcess

from pulsestream.v1 import random_pb2, random_pb2_grpc, timeseries_pb2, timeseries_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

SERIES = ["cpu", "memory", "requests", "latency"]
PARAMETERS = {"series", "resolution", "window", "format", "lastEventId", "api_key"}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False)


@pytest.fixture(scope="module")
def services(module_stack: Stack) -> Iterator[tuple[Generator, StreamerProcess]]:
    generator = module_stack.generator()
    streamer = module_stack.streamer([generator])
    yield generator, streamer
    module_stack.stop_all()
    for process in (generator, streamer):
        assert not _crashes(process.log_text()), f"{process.name}:\n{_crashes(process.log_text())[0]}"


def _crashes(log: str) -> list[str]:
    """Tracebacks in a log, except gRPC's own report of a request that is not protobuf (DecodeError)."""
    blocks = log.split("Traceback (most recent call last):")[1:]
    return [block[:2000] for block in blocks if "DecodeError" not in block.split("\n20", 1)[0]]


@pytest.fixture(scope="module")
def http(services: tuple[Generator, StreamerProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=services[1].url, timeout=httpx.Timeout(10.0)) as client:
        yield client


# --- HTTP ---------------------------------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_values = {
    "series": st.one_of(
        _text,
        st.lists(st.sampled_from([*SERIES, "", " ", "nope", "CPU", "a" * 300, "cpu;drop"]), max_size=20).map(",".join),
    ),
    "resolution": st.one_of(_text, st.sampled_from(["raw", "1s", "5s", "1m", "2s", "RAW", "", "0"])),
    "window": st.one_of(
        _text,
        st.sampled_from(["1s", "0ms", "10m", "11m", "-1s", "1e3s", "9" * 400 + "h", "1.5m", "nan", "inf", "1h"]),
        st.integers().map(str),
    ),
    "format": st.one_of(_text, st.sampled_from(["d3", "table", "csv", ""])),
    "lastEventId": st.one_of(_text, st.binary(max_size=64).map(lambda b: b.hex())),
    "api_key": _text,
}
_queries = st.dictionaries(
    st.one_of(st.sampled_from(sorted(PARAMETERS)), _text), st.one_of(*_values.values(), _text), max_size=6
)
# What an HTTP client can send at all (h11 refuses surrounding whitespace); the server sees the rest raw below.
_header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200).map(str.strip)
_headers = st.dictionaries(
    st.sampled_from(["Last-Event-ID", "Accept", "Authorization", "X-API-Key", "X-Forwarded-For", "Origin", "X-Odd"]),
    _header_values,
    max_size=4,
)
_paths = st.one_of(
    st.sampled_from(["/", "/v1/stream", "/v1/series", "/health", "/metrics", "/openapi.json", "/static/app.js"]),
    st.sampled_from(["/v1/", "/v2/stream", "/static/", "/static/../../etc/passwd", "/v1/stream/x", "//v1//stream"]),
    _text.map(lambda t: "/" + t.replace("?", "").replace("#", "")),
)


def _check_response(method: str, path: str, response: httpx.Response, body: bytes, query: dict[str, str]) -> None:
    where = f"{method} {path} {query!r} -> {response.status_code} {body[:300]!r}"
    assert response.status_code < 500, where
    kind = response.headers.get("content-type", "")
    if 400 <= response.status_code < 500:
        if method == "HEAD":
            return
        assert kind.startswith("application/json"), where
        document = json.loads(body)
        assert isinstance(document, dict) and set(document) == {"error"}, where  # one shape for every 4xx
        assert document["error"]["code"] and document["error"]["message"], where
        if response.status_code == 400 and path == "/v1/stream":
            assert document["error"]["parameter"] in PARAMETERS, where
            assert document["error"]["message"], where
    elif response.status_code == 200 and kind.startswith("text/event-stream"):
        assert b"event: snapshot" in body, where


def _request(
    http: httpx.Client, method: str, path: str, query: dict[str, str], headers: dict[str, str]
) -> tuple[httpx.Response, bytes]:
    # httpx replaces a URL's own query with ``params`` even when it is empty.
    with http.stream(method, path, params=query or None, headers=headers) as response:
        body = b""
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            for chunk in response.iter_bytes():
                body += chunk
                if b"event: snapshot" in body and body.endswith(b"\n\n"):
                    break
        else:
            body = response.read()
    return response, body


@FUZZ
@given(query=_queries, headers=_headers)
def test_fuzzed_stream_requests_never_get_a_5xx_and_4xx_bodies_are_json(
    http: httpx.Client, query: dict[str, str], headers: dict[str, str]
) -> None:
    response, body = _request(http, "GET", "/v1/stream", query, headers)
    _check_response("GET", "/v1/stream", response, body, query)


@FUZZ
@given(
    method=st.sampled_from(["GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    path=_paths,
    query=_queries,
    headers=_headers,
)
def test_fuzzed_requests_to_every_route_never_get_a_5xx(
    http: httpx.Client, method: str, path: str, query: dict[str, str], headers: dict[str, str]
) -> None:
    try:
        response, body = _request(http, method, path, query, headers)
    except httpx.InvalidURL:
        return  # the client refuses to send it; nothing reached the server
    _check_response(method, path, response, body, query)


def _first_event(http: httpx.Client, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    response, body = _request(http, "GET", path, {}, headers or {})
    if response.status_code != 200:
        return response.status_code, json.loads(body)
    block = body.split(b"event: snapshot\n", 1)[1]
    data = next(line for line in block.split(b"\n") if line.startswith(b"data: "))
    return 200, json.loads(data[6:])


def test_unreadable_cursors_restart_with_a_reset_snapshot_in_bounded_time(http: httpx.Client) -> None:
    path = "/v1/stream?series=cpu,memory&window=1s"
    _, body = _request(http, "GET", path, {}, {})
    good = next(line for line in body.split(b"\n") if line.startswith(b"id: "))[4:].decode()
    assert _first_event(http, path, {"Last-Event-ID": good})[1]["resumed"] is True
    # Not the last character: it may carry only base64's padding bits, which decoding ignores.
    middle = len(good) // 2
    unreadable = {
        "truncated": good[:-3],
        "one character changed": good[:middle] + ("A" if good[middle] != "A" else "B") + good[middle + 1 :],
        "garbage": "not-a-cursor!!",
        "base64 of nothing": "AAAA",
        "another stream's series": cursors.encode("raw", {"latency": int(time.time() * 1000)}),
        "another resolution": cursors.encode("1s", {"cpu": 1, "memory": 1}),
        "older than retention": cursors.encode("raw", {"cpu": 1000, "memory": 1000}),
        "from the far future": cursors.encode("raw", {"cpu": 2**62, "memory": 2**62}),
    }
    for what, value in unreadable.items():
        started = time.monotonic()
        status, snapshot = _first_event(http, path, {"Last-Event-ID": value})
        took = time.monotonic() - started
        assert status == 200, what
        assert snapshot["reset"] is True and snapshot["resumed"] is False, what
        assert took < 3.0 + 2.0, f"{what}: {took:.1f}s (ready_timeout is 3s)"
    status, error = _first_event(http, path, {"Last-Event-ID": "A" * 5000})
    assert status == 400 and error["error"]["parameter"] == "lastEventId"


def test_thousands_of_series_names_get_a_quick_400(http: httpx.Client) -> None:
    cases = {
        "unknown names": ",".join(f"s{i}" for i in range(5000)),
        "invalid names": ",".join(["../x"] * 3000),
        "more than the limit": ",".join(f"{name}" for name in SERIES * 5) + ",x" * 20,
        "empty names": "," * 5000,
    }
    for what, series in cases.items():
        started = time.monotonic()
        response, body = _request(http, "GET", "/v1/stream", {"series": series}, {})
        assert time.monotonic() - started < 2.0, what
        assert response.status_code == 400, (what, body[:200])
        assert json.loads(body)["error"]["parameter"] == "series", what
    # The same known name thousands of times is one series: a normal stream, no extra work per repetition.
    status, snapshot = _first_event(http, "/v1/stream?window=1s&series=" + ",".join(["cpu"] * 4000))
    assert status == 200 and {p["series"] for p in snapshot["points"]} == {"cpu"}


def _raw_request(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data:
                break
        return data


def test_huge_headers_get_a_clear_4xx_and_cost_bounded_memory(services: tuple[Generator, StreamerProcess]) -> None:
    streamer = services[1]
    before = streamer.rss_kib()
    reply = _raw_request(
        streamer.port, b"GET /v1/series HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8_000_000 + b"\r\n\r\n"
    )
    assert reply.split(b" ", 2)[1] in (b"400", b"431"), reply[:200]
    assert b"application/json" in reply.split(b"\r\n\r\n", 1)[0].lower(), reply[:200]
    assert streamer.rss_kib() - before < 4096
    assert streamer.alive()


def test_many_headers_and_long_urls_get_an_answer_not_a_crash(services: tuple[Generator, StreamerProcess]) -> None:
    streamer = services[1]
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
    reply = _raw_request(streamer.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 "), reply[:100]
    assert int(reply.split(b" ", 2)[1]) < 500
    reply = _raw_request(streamer.port, b"GET /v1/stream?series=" + b"c" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.split(b" ", 2)[1] == b"400", reply[:200]
    reply = _raw_request(streamer.port, b"\x00\xff garbage \r\n\r\n")
    assert reply.split(b" ", 2)[1] == b"400", reply[:200]
    assert streamer.alive()


# --- gRPC ---------------------------------------------------------------------------------------------

_int64 = st.integers(-(2**63), 2**63 - 1)
_int32 = st.integers(-(2**31), 2**31 - 1)
_names = st.one_of(st.sampled_from([*SERIES, "", "nope", "CPU", "cpu ", "\x00", "a" * 10_000]), st.text(max_size=30))


#: A start drawn without reading the clock (Hypothesis replays draws, so they must not depend on time):
#: ("after", value, relative) / ("time", seconds, nanos, relative); relative values are offsets from now.
Start = tuple[str, int, int, bool]


@st.composite
def _subscribe_requests(draw: st.DrawFn) -> tuple[timeseries_pb2.SubscribeRequest, Start]:
    request = timeseries_pb2.SubscribeRequest(
        series=draw(st.lists(_names, max_size=80)),
        resolution=draw(st.one_of(st.sampled_from(["", "raw", "1s", "5s", "1m", "1h", "RAW"]), st.text(max_size=10))),
    )
    kind = draw(st.sampled_from(["none", "after", "time"]))
    start: Start = ("none", 0, 0, False)
    if kind == "after":
        relative = draw(st.booleans())
        value = draw(st.integers(-120_000, 120_000) if relative else st.integers(0, 2**64 - 1))
        start = ("after", value, 0, relative)
    elif kind == "time":
        relative = draw(st.booleans())
        seconds = draw(st.integers(-120, 120) if relative else _int64)
        start = ("time", seconds, draw(_int32), relative)
    return request, start


def _with_start(request: timeseries_pb2.SubscribeRequest, start: Start) -> timeseries_pb2.SubscribeRequest:
    """Apply a drawn start, reading the clock now (at test time, not draw time)."""
    kind, value, nanos, relative = start
    now_s = int(time.time())
    if kind == "after":
        request.after_sequence = now_s * 1000 + value if relative else value
    elif kind == "time":
        seconds = now_s + value if relative else value
        request.start_time.CopyFrom(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
    return request


@pytest.fixture(scope="module")
def channel(services: tuple[Generator, StreamerProcess]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(services[0].address) as chan:
        yield chan


def _serving(channel: grpc.Channel) -> bool:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@FUZZ
@given(drawn=_subscribe_requests())
def test_fuzzed_subscribe_requests_get_invalid_argument_or_a_stream(
    channel: grpc.Channel, drawn: tuple[timeseries_pb2.SubscribeRequest, Start]
) -> None:
    request = _with_start(*drawn)
    buckets = request.resolution in ("1s", "5s", "1m")
    # Raw streams answer at once (history or the next tick): a long deadline only absorbs a loaded machine.
    call = timeseries_pb2_grpc.TimeSeriesServiceStub(channel).Subscribe(request, timeout=3 if buckets else 15)
    try:
        first = next(call)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and buckets:
            return  # a valid live bucket stream: its first bucket closes up to a minute from now
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, error.code(), error.details())
        assert error.details(), "the message says what is wrong"
    else:
        assert all(p.series in request.series for p in first.points)
    finally:
        call.cancel()


@FUZZ
@given(
    rpc=st.sampled_from(["GetNumber", "GetString", "StreamNumbers"]),
    bounds=st.tuples(st.one_of(_int64, st.integers(-5, 5)), st.one_of(_int64, st.integers(-5, 5))),
    sizes=st.tuples(
        st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 5000)),
        st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 3)),
    ),
    interval=st.one_of(st.none(), st.tuples(_int64, _int32), st.tuples(st.integers(0, 2), _int32)),
)
def test_fuzzed_random_service_requests_get_invalid_argument_or_an_answer(
    channel: grpc.Channel, rpc: str, bounds: tuple[int, int], sizes: tuple[int, int], interval: tuple[int, int] | None
) -> None:
    (low, high), (length, count) = bounds, sizes
    stub = random_pb2_grpc.RandomServiceStub(channel)
    try:
        if rpc == "GetNumber":
            reply = stub.GetNumber(random_pb2.NumberRequest(min=low, max=high), timeout=5)
            if (low, high) != (0, 0):
                assert low <= reply.value <= high
        elif rpc == "GetString":
            assert len(stub.GetString(random_pb2.StringRequest(length=length), timeout=5).value) == (length or 16)
        else:
            request = random_pb2.StreamNumbersRequest(min=low, max=high, count=count)
            if interval is not None:
                request.interval.CopyFrom(duration_pb2.Duration(seconds=interval[0], nanos=interval[1]))
            call = stub.StreamNumbers(request, timeout=5)
            try:
                next(call, None)
            finally:
                call.cancel()
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (rpc, error.code(), error.details())


def test_garbage_oversized_and_unknown_field_messages_leave_the_generator_serving(channel: grpc.Channel) -> None:
    identity = channel.unary_unary("/pulsestream.v1.TimeSeriesService/ListSeries")
    # Not protobuf at all: gRPC's own deserializer refuses it before our code runs.
    with pytest.raises(grpc.RpcError) as caught:
        identity(b"\xff\xff\xff\xff\x0f garbage", timeout=5)
    assert caught.value.code() != grpc.StatusCode.OK
    # Unknown fields are skipped (forward compatibility): an answer.
    unknown = b"\xa8\x1f\x01" + b"\xb2\x1f\x03abc"  # fields 501 (varint) and 502 (bytes)
    assert timeseries_pb2.ListSeriesResponse.FromString(identity(unknown, timeout=5)).series
    # Bigger than the 4 MiB receive limit: refused by gRPC with RESOURCE_EXHAUSTED.
    stub = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        next(stub.Subscribe(timeseries_pb2.SubscribeRequest(series=["x" * 5_000_000]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Just under it: our validation answers.
    with pytest.raises(grpc.RpcError) as caught:
        next(stub.Subscribe(timeseries_pb2.SubscribeRequest(series=["x" * 3_000_000]), timeout=10))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _serving(channel)


def test_the_generator_is_still_serving_and_uncrashed_after_the_fuzzing(
    services: tuple[Generator, StreamerProcess], channel: grpc.Channel
) -> None:
    generator, streamer = services
    assert generator.alive() and streamer.alive()
    assert _serving(channel)
    assert not _crashes(generator.log_text())
    assert not _crashes(streamer.log_text())
    assert Path(f"/proc/{generator.pid}").exists()
