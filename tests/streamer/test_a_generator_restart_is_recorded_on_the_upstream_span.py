"""A generator restart under a live stream: the upstream span records it, the trace goes on, the metric counts it."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from loopback import wait_for
from services import Generator, Stack, StreamerProcess, run_to_exit
from sse import iter_events
from traces import TRACING_ENV, hex_id, spans

SUBSCRIBE = "pulsestream.v1.TimeSeriesService/Subscribe"


def upstream_streams(streamer: StreamerProcess) -> int:
    """Open upstream streams as /health reports them."""
    return int(streamer.health()["upstream_detail"]["streams"])


@pytest.mark.e2e
@pytest.mark.fault
def test_a_generator_restart_is_recorded_as_events_on_the_same_upstream_span(stack: Stack) -> None:
    generator = stack.generator(**TRACING_ENV)
    streamer = stack.streamer(generator, STREAMER_HUB_LINGER="0ms", **TRACING_ENV)
    replacement = None
    trace_id = secrets.token_hex(16)
    url = f"{streamer.url}/v1/stream?series=cpu&window=1s"
    headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    with httpx.Client(timeout=30.0) as client, client.stream("GET", url, headers=headers) as response:
        events = iter_events(response)
        assert next(event.event for event in events if event.event == "points")
        generator.stop()  # SIGTERM: the generator drains, ending the stream with UNAVAILABLE
        error = next(event.data for event in events if event.event == "notice")
        assert error["code"] == "upstream_unavailable"
        # A new process on the same port, with files of its own (its spans are told apart from the first's).
        replacement = stack.generator(port=generator.port, **TRACING_ENV)
        wait_for(lambda: upstream_streams(streamer) == 1, what="the streamer's upstream stream back up")
        resumed = next(event.data for event in events if event.event == "points")
        assert resumed["meta"]["trace_id"] == trace_id  # same subscription span, same trace
        reconnects = streamer.metrics().total("pulsestream_streamer_upstream_reconnects_total")
        assert reconnects >= 1

    def upstream_span() -> dict[str, Any] | None:
        return next(
            (s for s in spans(streamer) if s["name"] == SUBSCRIBE and hex_id(s["context"]["trace_id"]) == trace_id),
            None,
        )

    span = wait_for(upstream_span, what="the upstream span to end")
    names = [event["name"] for event in span["events"]]
    assert "upstream.down" in names
    assert "upstream.reconnect" in names
    assert names.index("upstream.recovered") > names.index("upstream.down")
    assert span["attributes"]["pulsestream.reconnects"] == names.count("upstream.reconnect")
    span_id = hex_id(span["context"]["span_id"])

    # Both generators' stream spans are children of that one upstream span.
    def children(process: Generator | None) -> list[dict[str, Any]]:
        if process is None:
            return []
        return [s for s in spans(process) if hex_id(s.get("parent_id")) == span_id]

    assert children(generator), "the first generator's span (ended by its drain) is missing"
    drained = children(generator)[0]
    assert drained["attributes"]["pulsestream.end_reason"] == "draining"
    assert drained["attributes"]["rpc.grpc.status_code"] == 14  # UNAVAILABLE
    assert drained["status"]["status_code"] == "ERROR"
    assert wait_for(lambda: children(replacement), what="the second generator's span")


def test_an_unknown_trace_exporter_stops_start_up_with_a_clear_message() -> None:
    for name in ("generator", "streamer"):
        done = run_to_exit(
            f"pulsestream-{name}", {"OTEL_TRACES_EXPORTER": "bogus", "GENERATOR_PORT": "0", "STREAMER_PORT": "0"}
        )
        assert done.returncode == 2, done.stderr
        assert "OTEL_TRACES_EXPORTER='bogus' is not supported" in done.stderr
