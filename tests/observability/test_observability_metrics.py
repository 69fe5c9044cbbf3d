"""Both services' /metrics parse with the Prometheus text parser and move as traffic flows."""

from __future__ import annotations

import httpx
from loopback import wait_for
from traced_stack import Process, iter_events, metrics, total

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


def _urls(stack: tuple[Process, Process]) -> tuple[str, str]:
    generator, streamer = stack
    return (
        f"http://127.0.0.1:{generator.env['GENERATOR_METRICS_PORT']}/metrics",
        f"http://127.0.0.1:{streamer.port}/metrics",
    )


def _missing(url: str, wanted: dict[str, str]) -> list[str]:
    """What of ``wanted`` the endpoint lacks: a sample, or for a labelled family not yet used, its TYPE line."""
    samples = metrics(url)  # parses, or fails the test
    text = httpx.get(url, timeout=5.0).text
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    return [
        what
        for what, name in wanted.items()
        if not any(key.startswith(name) for key in samples)
        and not {name, name.removesuffix("_total"), name.removesuffix("_count")} & families
    ]


def test_both_endpoints_parse_and_expose_every_metric_the_issue_names(traced_stack: tuple[Process, Process]) -> None:
    generator_url, streamer_url = _urls(traced_stack)
    assert not _missing(streamer_url, STREAMER | {"drops": "pulsestream_streamer_sse_client_drops_total"})
    assert not _missing(generator_url, GENERATOR)


def test_counters_move_while_a_stream_flows(traced_stack: tuple[Process, Process]) -> None:
    generator_url, streamer_url = _urls(traced_stack)
    _, streamer = traced_stack
    before_streamer, before_generator = metrics(streamer_url), metrics(generator_url)
    url = f"http://127.0.0.1:{streamer.port}/v1/stream?series=latency&window=1s"
    with httpx.Client(timeout=30.0) as client, client.stream("GET", url) as response:
        events = iter_events(response.iter_lines())
        points = 0
        for kind, _ in events:
            points += kind == "points"
            if points >= 3:
                break
        during_streamer = metrics(streamer_url)
        during_generator = metrics(generator_url)
        assert total(during_streamer, STREAMER["connections"]) >= 1
        assert total(during_streamer, STREAMER["subscribers (upstream streams)"]) >= 1
        assert total(during_generator, GENERATOR["connections"]) >= 1
        assert total(during_generator, GENERATOR["subscribers"]) >= 1
        # Keep reading until the lag histograms have seen the live points too.
        for kind, _ in events:
            if kind == "points" and total(metrics(generator_url), GENERATOR["end-to-end lag"]) > total(
                before_generator, GENERATOR["end-to-end lag"]
            ):
                break
        during_streamer = metrics(streamer_url)
        during_generator = metrics(generator_url)

    for what in ("connections accepted", "points received", "points sent", "events sent", "end-to-end lag"):
        name = STREAMER[what]
        assert total(during_streamer, name) > total(before_streamer, name), what
    for what in ("points produced", "points sent", "end-to-end lag"):
        name = GENERATOR[what]
        assert total(during_generator, name) > total(before_generator, name), what
    # The lag of live points on loopback is well under a second at both ends.
    lag_sum = total(during_generator, "pulsestream_generator_send_lag_seconds_sum") - total(
        before_generator, "pulsestream_generator_send_lag_seconds_sum"
    )
    lag_count = total(during_generator, GENERATOR["end-to-end lag"]) - total(
        before_generator, GENERATOR["end-to-end lag"]
    )
    assert 0 <= lag_sum / lag_count < 1.0
    # The connection is gone from the gauges once the client has left.
    wait_for(
        lambda: total(metrics(streamer_url), STREAMER["connections"]) == 0,
        what="the streamer's connection gauge back to 0",
    )
    wait_for(
        lambda: total(metrics(generator_url), GENERATOR["connections"]) == 0,
        what="the generator's connection gauge back to 0 (the topic stopped, its stream ended)",
    )
