"""Tracing set-up: off by default, console spans as JSON lines, context round-trips through metadata."""

import io
import json

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from pulsestream.telemetry import _exporters, configure, extract_context, inject_metadata


def test_tracing_is_off_unless_an_exporter_is_named() -> None:
    assert configure("svc", environ={}) is None
    assert configure("svc", environ={"OTEL_TRACES_EXPORTER": "none"}) is None
    assert configure("svc", environ={"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}) is None


def test_console_exporter_writes_one_json_line_per_span() -> None:
    out = io.StringIO()
    [(exporter, batch)] = _exporters(["console"], out)
    provider = TracerProvider()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("one"):
        pass
    with provider.get_tracer("t").start_as_current_span("two"):
        pass
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["one", "two"]
    assert batch is False


def test_trace_context_round_trips_through_grpc_metadata() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("client") as span:
        metadata = inject_metadata()
        sent = span.get_span_context()
    assert any(key == "traceparent" for key, _ in metadata)
    received = trace.get_current_span(extract_context(metadata)).get_span_context()
    assert received.trace_id == sent.trace_id
    assert received.span_id == sent.span_id
    assert received.is_remote


def test_missing_metadata_gives_an_empty_context() -> None:
    assert not trace.get_current_span(extract_context(None)).get_span_context().is_valid
