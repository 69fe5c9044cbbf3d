"""Both services' /metrics parse with the Prometheus text parser and move as traffic flows."""

from __future__ import annotations

import httpx
import pytest
from loopback import wait_for
from services import Generator, Service, StreamerProcess
from sse import iter_events

pytestmark = pytest.mark.e2e

#: What the observability issue asks each service to expose (sample names as the parser reports them).
STREAMER = {
    "connections": "pulsestream_streamer_sse_connections",
    "connections accepted": "pulsestream_streamer_sse_connections_accepted_total",
    "subscribers (upstream streams)": "pulsestream_streamer_upstream_streams",
    "points received": "pulsestream_streamer_upstream_points_total",
    "points sent": "pulsestream_streamer_points_sent_total",
    "events sent": "pulsestream_streamer_sse_events_sent_total",
    "buffer fill": "pulsestream_streamer_client_queue_fill_ratio",
    "upstream reconnects": "pulsestream_streamer_upstream_reconnects_total",
    "end-to-end lag": "pulsestream_streamer_delivery_lag_seconds_count",
}
GENERATOR = {
    "connections": "pulsestream_generator_connections",
    "subscribers": "pulsestream_generator_subscribers",
    "points produced": "pulsestream_generator_points_produced_total",
    "points sent": "pulsestream_generator_points_sent_total",
    "drops": "pulsestream_generator_subscriber_overflows_total",
    "buffer fill": "pulsestream_generator_subscriber_buffer_fill_ratio",
    "end-to-end lag": "pulsestream_generator_send_lag_seconds_count",
}


def _missing(service: Service, wanted: dict[str, str]) -> list[str]:
    """What of ``wanted`` the endpoint lacks: a sample, or for a labelled family not yet used, its family."""
    metrics = service.metrics()  # parses, or fails the test
    names = [sample.name for sample in metrics.samples]
    return [
        what
        for what, name in wanted.items()
        if not any(sample.startswith(name) for sample in names)
        and not {name, name.removesuffix("_total"), name.removesuffix("_count")} & set(metrics.families)
    ]


def test_both_endpoints_parse_and_expose_every_metric_the_issue_names(
    traced_stack: tuple[Generator, StreamerProcess],
) -> None:
    generator, streamer = traced_stack
    assert not _missing(streamer, STREAMER | {"drops": "pulsestream_streamer_sse_client_drops_total"})
    assert not _missing(generator, GENERATOR)


def test_counters_move_while_a_stream_flows(traced_stack: tuple[Generator, StreamerProcess]) -> None:
    generator, streamer = traced_stack
    before_streamer, before_generator = streamer.metrics(), generator.metrics()
    url = f"{streamer.url}/v1/stream?series=latency&window=1s"
    with httpx.Client(timeout=30.0) as client, client.stream("GET", url) as response:
        events = iter_events(response)
        points = 0
        for event in events:
            points += event.event == "points"
            if points >= 3:
                break
        during_streamer = streamer.metrics()
        during_generator = generator.metrics()
        assert during_streamer.total(STREAMER["connections"]) >= 1
        assert during_streamer.total(STREAMER["subscribers (upstream streams)"]) >= 1
        assert during_generator.total(GENERATOR["connections"]) >= 1
        assert during_generator.total(GENERATOR["subscribers"]) >= 1
        # Keep reading until the lag histograms have seen the live points too.
        lag = GENERATOR["end-to-end lag"]
        for event in events:
            if event.event == "points" and generator.metrics().total(lag) > before_generator.total(lag):
                break
        during_streamer = streamer.metrics()
        during_generator = generator.metrics()

    for what in ("connections accepted", "points received", "points sent", "events sent", "end-to-end lag"):
        name = STREAMER[what]
        assert during_streamer.total(name) > before_streamer.total(name), what
    for what in ("points produced", "points sent", "end-to-end lag"):
        name = GENERATOR[what]
        assert during_generator.total(name) > before_generator.total(name), what
    # The lag of live points on loopback is well under a second at both ends.
    lag_sum = during_generator.total("pulsestream_generator_send_lag_seconds_sum") - before_generator.total(
        "pulsestream_generator_send_lag_seconds_sum"
    )
    lag_count = during_generator.total(lag) - before_generator.total(lag)
    assert 0 <= lag_sum / lag_count < 1.0
    # The connection is gone from the gauges once the client has left.
    wait_for(
        lambda: streamer.metrics().total(STREAMER["connections"]) == 0,
        what="the streamer's connection gauge back to 0",
    )
    wait_for(
        lambda: generator.metrics().total(GENERATOR["connections"]) == 0,
        what="the generator's connection gauge back to 0 (the topic stopped, its stream ended)",
    )
