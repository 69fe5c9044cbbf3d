"""OpenTelemetry set-up shared by the services, and trace context over gRPC.

Configuration comes from the standard ``OTEL_*`` environment variables, read
by the SDK itself, with two pulsestream defaults: exporting is off unless
``OTEL_TRACES_EXPORTER`` names an exporter (the SDK's own default, ``otlp``,
would make every laptop run try to reach a collector), and the
``service.name`` defaults to the service's name.

``OTEL_TRACES_EXPORTER`` accepts ``none`` (default), ``otlp`` (gRPC, to
``OTEL_EXPORTER_OTLP_ENDPOINT``), ``console`` (each finished span as one JSON
line on stdout), or a comma-separated list. With ``OTEL_SDK_DISABLED=true``
or no exporter, no SDK tracer provider is installed and the API's no-op
tracer is used: span calls on the hot path cost a function call and nothing
more.

Trace context crosses the gRPC bridge in the request metadata using the W3C
``traceparent``/``tracestate`` headers (the globally configured propagator,
W3C by default): :func:`inject_metadata` on the client side,
:func:`extract_context` on the server side.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

__all__ = ["configure", "configure_or_exit", "extract_context", "inject_metadata"]


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def _exporters(names: Iterable[str], out: IO[str]) -> list[tuple[SpanExporter, bool]]:
    """``(exporter, batch)`` pairs for the names in ``OTEL_TRACES_EXPORTER``."""
    chosen: list[tuple[SpanExporter, bool]] = []
    for name in names:
        if name in ("", "none"):
            continue
        if name == "console":
            chosen.append((ConsoleSpanExporter(out=out, formatter=_one_line), False))
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            chosen.append((OTLPSpanExporter(), True))
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported; use none, console or otlp")
    return chosen


def configure(
    service_name: str,
    environ: Mapping[str, str] | None = None,
    extra_exporters: Sequence[SpanExporter] = (),
    out: IO[str] | None = None,
) -> TracerProvider | None:
    """Install a tracer provider per the ``OTEL_*`` settings; return it, or ``None`` when tracing is off.

    ``extra_exporters`` (e.g. an in-memory exporter in tests) are attached
    with a synchronous processor so spans are visible as soon as they end.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    names = [part.strip().lower() for part in env.get("OTEL_TRACES_EXPORTER", "none").split(",")]
    exporters = _exporters(names, out or sys.stdout)
    if not exporters and not extra_exporters:
        return None
    attributes = {"service.name": env.get("OTEL_SERVICE_NAME") or service_name}
    # Resource.create also merges OTEL_RESOURCE_ATTRIBUTES; an explicit
    # OTEL_SERVICE_NAME still wins over our default.
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter, batch in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    for exporter in extra_exporters:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def configure_or_exit(service_name: str) -> TracerProvider | None:
    """:func:`configure` for an entry point: an ``OTEL_*`` value it cannot use prints one line and exits 2."""
    try:
        return configure(service_name)
    except ValueError as error:
        print(f"{service_name}: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def inject_metadata(ctx: otel_context.Context | None = None) -> list[tuple[str, str]]:
    """gRPC metadata carrying the trace context of ``ctx`` (default: the current one)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    return list(carrier.items())


def extract_context(metadata: Iterable[tuple[str, str | bytes]] | None) -> otel_context.Context:
    """The trace context a gRPC client sent in its metadata (empty if none)."""
    carrier = {
        key.lower(): value if isinstance(value, str) else value.decode("latin-1") for key, value in metadata or ()
    }
    return propagate.extract(carrier)
