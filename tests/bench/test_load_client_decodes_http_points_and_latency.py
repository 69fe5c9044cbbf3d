"""The load client's decoding: HTTP heads, chunked bodies, points, latency percentiles.

Its SSE parser is the tests' own, tested in tests/support (test_sse_reads_event_streams_as_a_browser_does).
"""

import orjson
import pytest

from bench.histogram import LatencyHistogram
from bench.loadclient import decode_points
from bench.wire import ChunkedDecoder, WireError, parse_head


def test_a_head_is_split_from_the_body_that_follows_it() -> None:
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n") is None
    parsed = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n5\r\nhello")
    assert parsed is not None
    head, rest = parsed
    assert head.status == 200
    assert head.chunked
    assert head.headers["x-a"] == "b"
    assert rest == b"5\r\nhello"


def test_a_non_http_answer_is_an_error() -> None:
    with pytest.raises(WireError):
        parse_head(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_chunks_decode_whatever_way_the_bytes_are_split() -> None:
    body = b"event: points\ndata: {}\n\n" * 3
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:40], body[40:])) + b"0\r\n\r\n"
    for cut in range(1, 12):
        decoder = ChunkedDecoder()
        decoded = b"".join(decoder.feed(encoded[i : i + cut]) for i in range(0, len(encoded), cut))
        assert decoded == body
        assert decoder.done


def test_a_bad_chunk_size_is_an_error() -> None:
    with pytest.raises(WireError):
        ChunkedDecoder().feed(b"zz\r\nhello\r\n")


def test_points_are_decoded_with_their_link_to_the_previous_point() -> None:
    data = orjson.dumps({"points": [{"series": "cpu", "t": 1000, "v": 0.5, "seq": 1000, "prev": 990}], "meta": {}})
    assert decode_points(data) == ((("cpu", 1000.0, 1000, 990),), False)
    unlinked = orjson.dumps({"points": [{"series": "cpu", "t": 5, "v": 1, "seq": 5}], "meta": {"reset": True}})
    assert decode_points(unlinked) == ((("cpu", 5.0, 5, -1),), True)


def test_percentiles_of_merged_histograms_are_those_of_all_samples() -> None:
    first, second = LatencyHistogram(), LatencyHistogram()
    for value in range(1, 51):
        first.record(float(value))
    for value in range(51, 101):
        second.record(float(value))
    second.record(-3.0)
    first.merge(second)
    assert first.total == 101
    assert first.negative == 1
    assert first.percentile(0.5) == pytest.approx(50.1)
    assert first.percentile(0.99) == pytest.approx(99.1)
    assert first.maximum() == pytest.approx(100.1)
    assert LatencyHistogram().summary() == {"p50": None, "p90": None, "p99": None, "max": None}
