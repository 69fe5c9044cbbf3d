"""``OTEL_TRACES_EXPORTER=otlp`` really exports: both services send their spans to an OTLP collector.

The collector here is a minimal OTLP/gRPC ``TraceService`` built from the
official protocol package (standing in for Jaeger, an external system). The
services batch spans; stopping them (SIGTERM) must flush what is batched, so
the test makes one request, stops both services, and then expects the
spans in the collector.
"""

from __future__ import annotations

import secrets
import signal
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from loopback import wait_for
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from services import Stack
from sse import read_stream

pytestmark = pytest.mark.e2e

SUBSCRIBE = "pulsestream.v1.TimeSeriesService/Subscribe"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """Keeps every exported span as (service.name, span)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[str, Any]] = []

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
                )
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((service, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of(self, service: str, trace_id: str) -> list[Any]:
        with self.lock:
            return [span for name, span in self.spans if name == service and span.trace_id.hex() == trace_id]


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(grace=None)


def test_otlp_export_delivers_both_services_spans_and_stopping_flushes_the_batch(
    stack: Stack, collector: tuple[Collector, int]
) -> None:
    servicer, port = collector
    otlp = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "debug",
    }
    generator = stack.generator(**otlp)
    streamer = stack.streamer(generator, STREAMER_HUB_LINGER="0ms", **otlp)
    trace_id = secrets.token_hex(16)
    try:
        read_stream(
            f"{streamer.url}/v1/stream?series=requests&window=1s",
            count=2,
            headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        )
        # The topic stops right after the client left (STREAMER_HUB_LINGER=0ms), ending both stream spans.
        wait_for(
            lambda: "stream closed" in {line.get("message") for line in generator.log_records()}, what="stream end"
        )
    finally:
        streamer.stop()
        generator.stop()
    assert generator.returncode == 0
    assert streamer.returncode == -signal.SIGTERM  # uvicorn re-raises the signal after its shutdown

    streamer_spans = wait_for(lambda: servicer.of("pulsestream-streamer", trace_id), what="the streamer's spans")
    generator_spans = wait_for(lambda: servicer.of("pulsestream-generator", trace_id), what="the generator's spans")
    assert {span.name for span in streamer_spans} == {"GET /v1/stream", SUBSCRIBE}
    upstream = next(span for span in streamer_spans if span.name == SUBSCRIBE)
    [served] = generator_spans
    assert served.name == SUBSCRIBE
    assert served.parent_span_id == upstream.span_id
