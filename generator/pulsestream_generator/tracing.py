"""The generator's one span: a SERVER span around each whole ``Subscribe`` stream.

Why one explicit span rather than a generic interceptor: the stream is the
unit a reader of the trace cares about (which series, from where, how many
points, why it ended), and only the servicer knows those things. No span per
point or per batch: the span is started once per stream, and the counts are
set as attributes when it ends, so the per-batch path costs nothing extra.
Health checks, reflection and ``RandomService`` are not traced.

The span continues the trace the caller sent in its gRPC metadata (W3C
``traceparent``, see :func:`pulsestream.telemetry.extract_context`): a
streamer's upstream CLIENT span is its parent. The span is NOT attached as
the current context for the stream's whole life: the handler is an async
generator that gRPC may close from another context (a cancelled call), and
a context attached before a ``yield`` then cannot be detached. Instead the
handler makes the span current around its log calls (:func:`current`), so
the stream's log lines still carry its ``trace_id`` and ``span_id``.

With tracing off the API's no-op tracer is used and every call here is a
cheap no-op.

Status follows the OpenTelemetry RPC conventions for servers: the span is an
error only for the codes that mean a server-side fault (UNKNOWN,
DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS);
INVALID_ARGUMENT, RESOURCE_EXHAUSTED (a slow subscriber), NOT_FOUND and
CANCELLED (the subscriber left) are outcomes, recorded in
``rpc.grpc.status_code``, not errors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import grpc
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from pulsestream.telemetry import extract_context
from pulsestream.v1 import timeseries_pb2

__all__ = ["SUBSCRIBE_SPAN", "current", "peer_attributes", "subscribe_span"]

_SERVICE = timeseries_pb2.DESCRIPTOR.services_by_name["TimeSeriesService"].full_name
#: The span's name: the full gRPC method, as the RPC semantic conventions name RPC spans.
SUBSCRIBE_SPAN = f"{_SERVICE}/Subscribe"

#: Codes that make a SERVER span an error (OpenTelemetry semantic conventions for gRPC).
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

_tracer = trace.get_tracer(__name__)


def peer_attributes(peer: str) -> dict[str, str | int]:
    """``network.peer.*`` attributes from a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``, ``unix:...``)."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = rest.rpartition(":")
        attributes: dict[str, str | int] = {
            "network.peer.address": host.strip("[]"),
            "network.type": kind,
        }
        if port.isdigit():
            attributes["network.peer.port"] = int(port)
        return attributes
    if kind == "unix":
        return {"network.peer.address": rest, "network.transport": "unix"}
    return {"network.peer.address": peer} if peer else {}


def _status_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode | None:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else None


@contextlib.contextmanager
def subscribe_span(
    request: timeseries_pb2.SubscribeRequest, context: grpc.aio.ServicerContext, peer: str
) -> Iterator[Span]:
    """The SERVER span of one ``Subscribe`` stream, current for its whole life.

    The caller sets ``pulsestream.points_sent`` and ``pulsestream.end_reason``
    when the stream ends; the status code is set here from how the handler
    left (normally, aborted with a code, cancelled by the client, or failed).
    """
    attributes: dict[str, str | int | list[str]] = {
        "rpc.system": "grpc",
        "rpc.service": _SERVICE,
        "rpc.method": "Subscribe",
        "pulsestream.series": list(request.series),
        "pulsestream.resolution": request.resolution or "raw",
        "pulsestream.start": request.WhichOneof("start") or "live",
        "pulsestream.subscriber": peer,
        **peer_attributes(peer),
    }
    if request.WhichOneof("start") == "after_sequence":
        attributes["pulsestream.after_sequence"] = int(request.after_sequence)
    parent = extract_context(context.invocation_metadata())
    span = _tracer.start_span(SUBSCRIBE_SPAN, context=parent, kind=SpanKind.SERVER, attributes=attributes)
    code = grpc.StatusCode.OK
    try:
        yield span
    except (asyncio.CancelledError, GeneratorExit):
        code = grpc.StatusCode.CANCELLED
        raise
    except grpc.aio.AbortError:
        code = _status_code(context) or grpc.StatusCode.UNKNOWN
        raise
    except BaseException as error:
        code = grpc.StatusCode.UNKNOWN
        span.record_exception(error)
        raise
    finally:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_ERRORS:
            details = context.details() if code is not grpc.StatusCode.UNKNOWN else None
            span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details}" if details else code.name))
        span.end()


def current(span: Span) -> contextlib.AbstractContextManager[Span]:
    """Make ``span`` current for a synchronous block (e.g. a log call), detaching in the same context."""
    return trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False)
