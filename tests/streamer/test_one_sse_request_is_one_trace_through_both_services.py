"""One SSE request is one trace from the browser through the streamer to the generator.

A request carrying a W3C ``traceparent`` opens a stream of two series on the
real streamer, which opens two upstream subscriptions on the real generator.
Both processes print each finished span as a JSON line; the tests assert the
spans, their parent and link relations, the trace id in the events' ``meta``
and the ids in the log lines.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from loopback import wait_for
from services import Generator, Service, StreamerProcess
from sse import Event, iter_events, read_stream
from traces import hex_id, spans

pytestmark = pytest.mark.e2e

SUBSCRIBE = "pulsestream.v1.TimeSeriesService/Subscribe"
SERIES = ["cpu", "memory"]


def kind(span: dict[str, Any]) -> str:
    return str(span["kind"]).removeprefix("SpanKind.")


def trace_of(span: dict[str, Any]) -> str:
    return hex_id(span["context"]["trace_id"])


def id_of(span: dict[str, Any]) -> str:
    return hex_id(span["context"]["span_id"])


@dataclass
class Journey:
    trace_id: str
    remote_parent: str
    stream: list[Event]
    connection: dict[str, Any]
    upstream: list[dict[str, Any]]
    generator: list[dict[str, Any]]


@pytest.fixture(scope="module")
def journey(traced_stack: tuple[Generator, StreamerProcess]) -> Journey:
    """One request with a traceparent of our own, read for a few events, then closed; its spans collected."""
    generator, streamer = traced_stack
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    stream = read_stream(
        f"{streamer.url}/v1/stream?series={','.join(SERIES)}&window=2s",
        count=4,
        headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )

    def ours(process: Service) -> list[dict[str, Any]]:
        return [span for span in spans(process) if trace_of(span) == trace_id]

    def streamer_done() -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        found = ours(streamer)
        connections = [s for s in found if s["name"] == "GET /v1/stream"]
        upstream = [
            s for s in found if s["name"] == SUBSCRIBE and s["attributes"]["pulsestream.purpose"] == "subscription"
        ]
        return (connections[0], upstream) if connections and len(upstream) == len(SERIES) else None

    connection, upstream = wait_for(streamer_done, what="the streamer's connection and upstream spans")
    upstream_ids = {id_of(span) for span in upstream}

    def generator_done() -> list[dict[str, Any]] | None:
        found = [s for s in ours(generator) if s["name"] == SUBSCRIBE]
        covered = {hex_id(s["parent_id"]) for s in found}
        return found if upstream_ids <= covered else None

    served = wait_for(generator_done, what="a generator span under each upstream span")
    return Journey(trace_id, parent, stream, connection, upstream, served)


def test_the_connection_span_continues_the_requests_traceparent(journey: Journey) -> None:
    span = journey.connection
    assert kind(span) == "SERVER"
    assert trace_of(span) == journey.trace_id
    assert hex_id(span["parent_id"]) == journey.remote_parent
    attributes = span["attributes"]
    assert attributes["pulsestream.series"] == SERIES
    assert attributes["pulsestream.resolution"] == "raw"
    assert attributes["pulsestream.format"] == "d3"
    assert attributes["pulsestream.client_id"]
    assert attributes["pulsestream.end_reason"] == "disconnect"
    # A snapshot and at least the three points events the test read.
    assert attributes["pulsestream.events_sent"] >= 4
    assert attributes["pulsestream.bytes_sent"] > 0
    assert "url.query" not in attributes  # an api_key query parameter must never reach a span


def test_upstream_subscriptions_are_client_spans_in_the_same_trace_and_linked_from_the_connection(
    journey: Journey,
) -> None:
    connection_id = id_of(journey.connection)
    assert sorted(span["attributes"]["pulsestream.series"][0] for span in journey.upstream) == SERIES
    for span in journey.upstream:
        assert kind(span) == "CLIENT"
        assert trace_of(span) == journey.trace_id
        # The connection that created the topic is its parent ...
        assert hex_id(span["parent_id"]) == connection_id
        assert span["attributes"]["rpc.system"] == "grpc"
        assert span["attributes"]["rpc.method"] == "Subscribe"
    # ... and the connection links to every upstream subscription it reads from.
    linked = {hex_id(link["context"]["span_id"]) for link in journey.connection["links"]}
    assert linked == {id_of(span) for span in journey.upstream}


def test_the_generators_server_span_is_a_child_of_the_upstream_client_span(journey: Journey) -> None:
    by_id = {id_of(span): span for span in journey.upstream}
    for span in journey.generator:
        assert kind(span) == "SERVER"
        assert trace_of(span) == journey.trace_id
        upstream = by_id[hex_id(span["parent_id"])]
        attributes = span["attributes"]
        assert attributes["pulsestream.series"] == upstream["attributes"]["pulsestream.series"]
        assert attributes["rpc.service"] == "pulsestream.v1.TimeSeriesService"
        assert attributes["pulsestream.subscriber"].startswith("ipv4:127.0.0.1:")
        assert attributes["pulsestream.end_reason"] == "cancelled"  # the topic stopped after its last client
        assert attributes["rpc.grpc.status_code"] == 1
    assert sum(span["attributes"]["pulsestream.points_sent"] for span in journey.generator) > 0
    assert {span["resource"]["attributes"]["service.name"] for span in journey.generator} == {"pulsestream-generator"}
    assert journey.connection["resource"]["attributes"]["service.name"] == "pulsestream-streamer"


def test_every_event_meta_carries_the_upstream_trace_id(journey: Journey) -> None:
    upstream_traces = {trace_of(span) for span in journey.upstream}
    kinds = [event.event for event in journey.stream]
    assert kinds[0] == "snapshot" and kinds.count("points") >= 3
    for event in journey.stream:
        assert event.data["meta"]["trace_id"] in upstream_traces
        assert "trace_ids" not in event.data["meta"]  # both subscriptions were started by this request: one trace


def test_log_lines_carry_the_ids_of_the_active_span(
    journey: Journey, traced_stack: tuple[Generator, StreamerProcess]
) -> None:
    generator, streamer = traced_stack
    connection_id = id_of(journey.connection)
    connected = [
        line
        for line in streamer.log_records()
        if line.get("message") == "client connected" and line.get("trace_id") == journey.trace_id
    ]
    assert [line["span_id"] for line in connected] == [connection_id]
    subscribing = [
        line
        for line in streamer.log_records()
        if line.get("message") == "upstream subscribe" and line.get("trace_id") == journey.trace_id
    ]
    assert {line["span_id"] for line in subscribing} == {id_of(span) for span in journey.upstream}
    opened = [
        line
        for line in generator.log_records()
        if line.get("message") == "stream opened" and line.get("trace_id") == journey.trace_id
    ]
    assert {line["span_id"] for line in opened} == {id_of(span) for span in journey.generator}
    # Outside any span (start-up), no ids.
    serving = next(line for line in generator.log_records() if line.get("message") == "generator serving")
    assert "trace_id" not in serving and "span_id" not in serving


def test_a_second_client_of_a_shared_subscription_has_its_own_trace_linked_to_the_first(
    traced_stack: tuple[Generator, StreamerProcess],
) -> None:
    """Two browsers on one topic: one upstream span (in the first one's trace), two connection spans."""
    _, streamer = traced_stack
    url = f"{streamer.url}/v1/stream?series=requests&window=1s"
    first_trace, second_trace = secrets.token_hex(16), secrets.token_hex(16)
    with (
        httpx.Client(timeout=30.0) as client,
        client.stream("GET", url, headers={"traceparent": f"00-{first_trace}-{secrets.token_hex(8)}-01"}) as first,
    ):
        events = iter_events(first)  # kept: a dropped iterator closes the stream
        first_meta = next(event.data for event in events if event.event == "snapshot")["meta"]
        second = read_stream(url, count=2, headers={"traceparent": f"00-{second_trace}-{secrets.token_hex(8)}-01"})
    assert first_meta["trace_id"] == first_trace
    assert {event.data["meta"]["trace_id"] for event in second} == {first_trace}

    def connections() -> dict[str, dict[str, Any]] | None:
        found = {
            trace_of(s): s
            for s in spans(streamer)
            if s["name"] == "GET /v1/stream" and trace_of(s) in (first_trace, second_trace)
        }
        return found if len(found) == 2 else None

    connected = wait_for(connections, what="both connection spans")
    upstream = wait_for(
        lambda: [
            s for s in spans(streamer) if s["name"] == SUBSCRIBE and trace_of(s) == first_trace and kind(s) == "CLIENT"
        ],
        what="the shared upstream span",
    )
    assert len(upstream) == 1
    for span in connected.values():
        assert [hex_id(link["context"]["span_id"]) for link in span["links"]] == [id_of(upstream[0])]
        assert [hex_id(link["context"]["trace_id"]) for link in span["links"]] == [first_trace]


def test_only_streams_are_traced_not_probes_catalogue_calls_or_metrics(
    journey: Journey, traced_stack: tuple[Generator, StreamerProcess]
) -> None:
    """The fixtures polled /health, the streamer called ListSeries, tests scraped /metrics: none of it is a span."""
    generator, streamer = traced_stack
    assert {span["name"] for span in spans(generator)} == {SUBSCRIBE}
    assert {span["name"] for span in spans(streamer)} <= {SUBSCRIBE, "GET /v1/stream"}
