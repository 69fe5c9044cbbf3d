"""The streamer's tracing logic, with a private tracer provider and an in-memory exporter.

The process-wide tracer provider is left alone (other tests in this process
run real apps); each test points the module's tracer at its own provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pulsestream_streamer.observability import tracing


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield memory
    provider.shutdown()


@dataclass
class FakeTopic:
    """Only what :func:`tracing.trace_fields` reads: a series and its upstream trace."""

    series: str
    trace: tracing.UpstreamTrace


def test_untraced_meta_is_the_same_bytes_object_and_carries_no_trace_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracing off (the API's no-op tracer): nothing added, nothing re-encoded."""
    monkeypatch.setattr(tracing, "_tracer", trace.NoOpTracer())
    meta = b'{"resolution":"raw"}'
    topics = [FakeTopic("cpu", tracing.UpstreamTrace("cpu", "raw", "127.0.0.1:50051"))]
    assert topics[0].trace.trace_id == ""
    assert tracing.points_meta(meta, topics) is meta
    assert tracing.trace_fields(topics) == {}


def test_with_no_tracer_provider_installed_a_connection_costs_no_span_work() -> None:
    """This process never installs a global provider (tracing off, as by default)."""
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    parent = [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    with tracing.connection_span(parent, "1.2.3.4:5", series=["cpu"], resolution="raw", fmt="d3", resume=False) as c:
        assert c.span is trace.INVALID_SPAN
        assert not trace.get_current_span().get_span_context().is_valid  # nothing made current either


def test_meta_names_one_trace_or_each_series_trace(exporter: InMemorySpanExporter) -> None:
    cpu = FakeTopic("cpu", tracing.UpstreamTrace("cpu", "raw", "127.0.0.1:50051"))
    memory = FakeTopic("memory", tracing.UpstreamTrace("memory", "raw", "127.0.0.1:50051"))
    assert len(cpu.trace.trace_id) == 32 and cpu.trace.trace_id != memory.trace.trace_id
    meta = orjson.loads(tracing.points_meta(b'{"resolution":"raw","x":"t"}', [cpu, memory]))
    assert meta == {
        "resolution": "raw",
        "x": "t",
        "trace_id": cpu.trace.trace_id,
        "trace_ids": {"cpu": cpu.trace.trace_id, "memory": memory.trace.trace_id},
    }
    assert tracing.trace_fields([memory]) == {"trace_id": memory.trace.trace_id}


def test_an_upstream_span_records_outages_and_reconnects_as_events_and_ends_when_its_topic_stops(
    exporter: InMemorySpanExporter,
) -> None:
    upstream = tracing.UpstreamTrace("cpu", "1s", "[::1]:50051")

    async def topic() -> None:
        with upstream.active():
            upstream.down("UNAVAILABLE", "server draining")
            upstream.reconnecting("[::1]:50052", 1234)
            upstream.recovered()
            await asyncio.Event().wait()

    async def run() -> None:
        task = asyncio.create_task(topic())
        await asyncio.sleep(0)
        assert not exporter.get_finished_spans()  # live while the topic runs
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    [span] = exporter.get_finished_spans()
    assert span.kind is SpanKind.CLIENT
    assert span.name == "pulsestream.v1.TimeSeriesService/Subscribe"
    assert [event.name for event in span.events] == ["upstream.down", "upstream.reconnect", "upstream.recovered"]
    assert span.events[1].attributes == {
        "attempt": 1,
        "pulsestream.after_sequence": 1234,
        "server.address": "::1",
        "server.port": 50052,
    }
    assert span.attributes is not None
    assert span.attributes["server.address"] == "::1"
    assert span.attributes["pulsestream.reconnects"] == 1
    assert span.status.status_code is StatusCode.UNSET  # stopping a topic is its normal end, not an error


def test_a_fault_in_the_upstream_loop_marks_the_span_as_an_error(exporter: InMemorySpanExporter) -> None:
    upstream = tracing.UpstreamTrace("cpu", "raw", "127.0.0.1:50051")
    with pytest.raises(RuntimeError), upstream.active():
        raise RuntimeError("protocol surprise")
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def test_a_connection_span_continues_a_traceparent_header_and_counts_what_it_sent(
    exporter: InMemorySpanExporter,
) -> None:
    upstream = FakeTopic("cpu", tracing.UpstreamTrace("cpu", "raw", "127.0.0.1:50051"))

    @dataclass
    class FakeFeed:
        topics: list[FakeTopic]
        flushes: int

    feed = FakeFeed([upstream], flushes=7)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = [(b"Traceparent", parent.encode()), (b"x-api-key", b"secret")]
    with tracing.connection_span(
        headers, "10.0.0.9:51000", series=["cpu"], resolution="raw", fmt="table", resume=False
    ) as connection:
        connection.joined("abc-1", feed)
        feed.flushes = 12
        connection.ended("slow_consumer", feed, 4096, 3)
    connection_span = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert connection_span.context is not None and connection_span.parent is not None
    assert format(connection_span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(connection_span.parent.span_id, "016x") == "b7ad6b7169203331"
    attributes = dict(connection_span.attributes or {})
    assert attributes["client.address"] == "10.0.0.9" and attributes["client.port"] == 51000
    assert attributes["pulsestream.client_id"] == "abc-1"
    assert attributes["pulsestream.points_events"] == 5
    assert attributes["pulsestream.events_sent"] == 6  # the snapshot too
    assert attributes["pulsestream.end_reason"] == "slow_consumer"
    assert attributes["pulsestream.frames_dropped"] == 3
    assert "secret" not in repr(attributes)  # request headers other than the trace context are not recorded
    [link] = connection_span.links
    assert link.context.span_id == upstream.trace.span.get_span_context().span_id


def test_a_connection_that_never_joined_counts_no_events(exporter: InMemorySpanExporter) -> None:
    with (
        pytest.raises(ValueError, match="boom"),
        tracing.connection_span([], "unknown", series=["cpu"], resolution="raw", fmt="d3", resume=True) as connection,
    ):
        connection.ended("", None, 0, 0)
        raise ValueError("boom")
    [span] = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["pulsestream.events_sent"] == 0
    assert attributes["pulsestream.end_reason"] == "closed"
    assert span.status.status_code is StatusCode.ERROR
