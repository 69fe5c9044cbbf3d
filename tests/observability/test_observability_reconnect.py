"""A generator restart under a live stream: the upstream span records it, the trace goes on, the metric counts it."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from loopback import wait_for
from traced_stack import Process, hex_id, iter_events, metrics, start_generator, start_streamer, total

SUBSCRIBE = "pulsestream.v1.TimeSeriesService/Subscribe"


def upstream_streams(streamer: Process) -> int:
    """Open upstream streams as /health reports them."""
    return int(httpx.get(f"http://127.0.0.1:{streamer.port}/health", timeout=5.0).json()["upstream_detail"]["streams"])


def test_a_generator_restart_is_recorded_as_events_on_the_same_upstream_span(tmp_path: Path) -> None:
    generator = start_generator(tmp_path)
    streamer = start_streamer(tmp_path, generator.port)
    replacement = None
    try:
        trace_id = secrets.token_hex(16)
        url = f"http://127.0.0.1:{streamer.port}/v1/stream?series=cpu&window=1s"
        headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
        with httpx.Client(timeout=30.0) as client, client.stream("GET", url, headers=headers) as response:
            events = iter_events(response.iter_lines())
            assert next(kind for kind, _ in events if kind == "points")
            generator.stop()  # SIGTERM: the generator drains, ending the stream with UNAVAILABLE
            error = next(data for kind, data in events if kind == "notice")
            assert error["code"] == "upstream_unavailable"
            replacement = start_generator(tmp_path, port=generator.port)
            wait_for(lambda: upstream_streams(streamer) == 1, what="the streamer's upstream stream back up")
            resumed = next(data for kind, data in events if kind == "points")
            assert resumed["meta"]["trace_id"] == trace_id  # same subscription span, same trace
            reconnects = total(
                metrics(f"http://127.0.0.1:{streamer.port}/metrics"), "pulsestream_streamer_upstream_reconnects_total"
            )
            assert reconnects >= 1

        def upstream_span() -> dict[str, Any] | None:
            return next(
                (
                    s
                    for s in streamer.spans()
                    if s["name"] == SUBSCRIBE and hex_id(s["context"]["trace_id"]) == trace_id
                ),
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
        def children(process: Process | None) -> list[dict[str, Any]]:
            if process is None:
                return []
            return [s for s in process.spans() if hex_id(s.get("parent_id")) == span_id]

        assert children(generator), "the first generator's span (ended by its drain) is missing"
        drained = children(generator)[0]
        assert drained["attributes"]["pulsestream.end_reason"] == "draining"
        assert drained["attributes"]["rpc.grpc.status_code"] == 14  # UNAVAILABLE
        assert drained["status"]["status_code"] == "ERROR"
        assert wait_for(lambda: children(replacement), what="the second generator's span")
    finally:
        streamer.stop()
        if replacement is not None:
            replacement.stop()
        generator.stop()


def test_an_unknown_trace_exporter_stops_start_up_with_a_clear_message() -> None:
    for name in ("generator", "streamer"):
        done = subprocess.run(
            [str(Path(sys.executable).parent / f"pulsestream-{name}")],
            env={"PATH": "", "OTEL_TRACES_EXPORTER": "bogus", "GENERATOR_PORT": "0", "STREAMER_PORT": "0"},
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert b"OTEL_TRACES_EXPORTER='bogus' is not supported" in done.stderr
