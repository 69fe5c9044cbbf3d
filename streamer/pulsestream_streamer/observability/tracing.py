"""The streamer's spans: upstream subscriptions, SSE connections, and the links between them.

Explicit spans in the places that matter, no generic middleware or interceptor:

``pulsestream.v1.TimeSeriesService/Subscribe`` (CLIENT), one per topic
    A topic's upstream subscription is long-lived and shared, so it has ONE
    span for its whole life (:class:`UpstreamTrace`), current while
    :func:`upstream.follow` runs, so every ``Subscribe`` call it makes carries
    that span in its ``traceparent`` and each generator stream (one per
    attempt) is a child of it. Re-subscriptions (outage, failover, a slow-
    subscriber cut, a sequence gap) are span *events* (``upstream.reconnect``,
    ``upstream.down``, ``upstream.recovered``), not new spans: the trace id
    stays the same for the topic's life, which is what lets one id in the
    event ``meta`` lead to the whole upstream story. The SDK caps events per
    span (128 by default), so a flapping upstream cannot grow a span without
    bound. The span starts when the topic is created, as a child of the
    context current at that moment: the SSE connection that first asked for
    the topic. It ends when the topic stops (``hub_linger`` after its last
    client left, or shutdown); like every span it is exported when it ends.

``GET /v1/stream`` (SERVER), one per SSE connection
    :class:`ConnectionTrace`: continues a W3C ``traceparent`` the request
    carried (a browser or an ingress that traces), else starts a trace. It
    is current for the whole connection, so topics it creates become its
    children and its log lines carry its ids. It is LINKED to the upstream
    span of every topic it reads from (a span link, not a parent: a topic
    outlives and is shared by many connections). At the end it records the
    client id, events sent, bytes written, dropped frames and end reason.

``pulsestream.v1.TimeSeriesService/Subscribe`` (CLIENT, ``pulsestream.purpose=refill``)
    :func:`refill_span`: the short call that loads history a resuming
    client's cursor needs, a child of that client's connection span.

No span per point or per flush. The event ``meta`` gets the upstream trace
id once per feed (:func:`points_meta`), so points stay encoded once for all
clients. With tracing off (the API's no-op tracer) spans are non-recording,
ids are invalid and nothing is added to ``meta``.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import FrameType
from typing import Any, Protocol

import orjson
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = [
    "CONNECTION_SPAN",
    "SUBSCRIBE_SPAN",
    "ConnectionTrace",
    "Joined",
    "Traced",
    "UpstreamTrace",
    "connection_span",
    "exporting_until_exit",
    "points_meta",
    "refill_span",
    "trace_fields",
    "trace_id_of",
]

_SERVICE = "pulsestream.v1.TimeSeriesService"
#: Name of upstream CLIENT spans: the full gRPC method, as the RPC semantic conventions name RPC spans.
SUBSCRIBE_SPAN = f"{_SERVICE}/Subscribe"
#: Name of SSE connection SERVER spans: ``{method} {route}``, as the HTTP semantic conventions name them.
CONNECTION_SPAN = "GET /v1/stream"
#: gRPC status code CANCELLED: how a topic's call ends when the topic stops.
_CANCELLED = 1

_tracer = trace.get_tracer(__name__)

_RPC_ATTRIBUTES = {"rpc.system": "grpc", "rpc.service": _SERVICE, "rpc.method": "Subscribe"}


def _recording() -> bool:
    """Whether spans go anywhere: an SDK provider was installed (or a test gave this module a tracer of its own)."""
    return not (
        isinstance(_tracer, trace.ProxyTracer) and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    )


def trace_id_of(span: Span) -> str:
    """The span's trace id as 32 hex digits (the W3C and Jaeger form), or ``""`` when not traced."""
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def _server(address: str) -> dict[str, str | int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return {"server.address": address}
    return {"server.address": host.strip("[]"), "server.port": int(port)}


class UpstreamTrace:
    """The CLIENT span of one topic's upstream subscription, from topic creation to topic stop."""

    __slots__ = ("reconnects", "span", "trace_id")

    def __init__(self, series: str, resolution: str, address: str) -> None:
        # Parent: the context current now, i.e. the SSE connection that created the topic.
        self.span = _tracer.start_span(
            SUBSCRIBE_SPAN,
            kind=SpanKind.CLIENT,
            attributes={
                **_RPC_ATTRIBUTES,
                **_server(address),
                "pulsestream.purpose": "subscription",
                "pulsestream.series": [series],
                "pulsestream.resolution": resolution,
            },
        )
        self.trace_id = trace_id_of(self.span)
        self.reconnects = 0

    @contextlib.contextmanager
    def active(self) -> Iterator[Span]:
        """Make the span current (the ``Subscribe`` calls inject it) and end it on exit."""
        span = self.span
        try:
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                yield span
        except Exception as error:  # a fault; cancellation (the topic stopping) is the normal end
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, repr(error)))
            raise
        finally:
            span.set_attributes({"rpc.grpc.status_code": _CANCELLED, "pulsestream.reconnects": self.reconnects})
            span.end()

    def reconnecting(self, address: str, after: int) -> None:
        """A new ``Subscribe`` call is about to replace the previous one."""
        self.reconnects += 1
        self.span.add_event(
            "upstream.reconnect",
            {"attempt": self.reconnects, "pulsestream.after_sequence": after, **_server(address)},
        )

    def down(self, code: str, message: str) -> None:
        """The upstream failed; clients were told (``upstream_unavailable``)."""
        self.span.add_event("upstream.down", {"rpc.grpc.status_code_name": code, "message": message})

    def recovered(self) -> None:
        """Points flow again after an outage."""
        self.span.add_event("upstream.recovered")


class Traced(Protocol):
    """What the helpers below need from a topic."""

    @property
    def series(self) -> str: ...

    @property
    def trace(self) -> UpstreamTrace: ...


class Joined(Protocol):
    """What a connection span needs from the feed its client joined."""

    @property
    def topics(self) -> Sequence[Traced]: ...

    @property
    def flushes(self) -> int: ...


def trace_fields(topics: Sequence[Traced]) -> dict[str, Any]:
    """``meta`` fields naming the upstream trace(s) behind a stream's points; ``{}`` when not traced.

    ``trace_id`` is the first series' upstream trace. Series whose subscriptions
    were started by the same request share it (the usual case); when they do
    not, ``trace_ids`` maps each series to its own.
    """
    ids = {topic.series: topic.trace.trace_id for topic in topics if topic.trace.trace_id}
    if not ids:
        return {}
    fields: dict[str, Any] = {"trace_id": next(iter(ids.values()))}
    if len(set(ids.values())) > 1:
        fields["trace_ids"] = ids
    return fields


def points_meta(meta: bytes, topics: Sequence[Traced]) -> bytes:
    """The encoded ``points`` meta with :func:`trace_fields` added (encoded once per feed)."""
    fields = trace_fields(topics)
    if not fields:
        return meta
    return orjson.dumps(orjson.loads(meta) | fields)


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in raw}


class ConnectionTrace:
    """The SERVER span of one SSE connection, with what it needs to count the events it sent."""

    __slots__ = ("_joined_at", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self._joined_at: int | None = None

    def joined(self, client_id: str, feed: Joined | None) -> None:
        """The client is attached to ``feed``: link the upstream spans it reads from."""
        span = self.span
        span.set_attribute("pulsestream.client_id", client_id)
        if feed is None:
            return
        self._joined_at = feed.flushes
        for topic in feed.topics:
            context = topic.trace.span.get_span_context()
            if context.is_valid:
                span.add_link(context, {"pulsestream.series": topic.series})

    def ended(self, reason: str, feed: Joined | None, bytes_sent: int, dropped: int) -> None:
        """The stream is over: what it sent and why it ended.

        ``events_sent`` counts the snapshot and the ``points`` events queued to
        this client (the feed's flushes since it joined); heartbeats and
        ``notice`` events are not counted, frames a slow client lost are in
        ``frames_dropped``.
        """
        points = max(0, feed.flushes - self._joined_at) if feed is not None and self._joined_at is not None else 0
        self.span.set_attributes(
            {
                "pulsestream.end_reason": reason or "closed",
                "pulsestream.events_sent": points + (0 if self._joined_at is None else 1),
                "pulsestream.points_events": points,
                "pulsestream.bytes_sent": bytes_sent,
                "pulsestream.frames_dropped": dropped,
            }
        )


@contextlib.contextmanager
def connection_span(
    headers: Iterable[tuple[bytes, bytes]],
    peer: str,
    *,
    series: Sequence[str],
    resolution: str,
    fmt: str,
    resume: bool,
) -> Iterator[ConnectionTrace]:
    """The connection's span, current for the whole stream; continues a ``traceparent`` the request carried.

    With tracing off it yields at once with the invalid span: a connection then
    costs about a microsecond here instead of the ~20 µs of going through the
    no-op tracer.
    """
    if not _recording():
        yield ConnectionTrace(trace.INVALID_SPAN)
        return
    host, _, port = peer.rpartition(":")
    attributes: dict[str, Any] = {
        "http.request.method": "GET",
        "http.route": "/v1/stream",
        "url.path": "/v1/stream",
        "client.address": host or peer,
        "pulsestream.series": list(series),
        "pulsestream.resolution": resolution,
        "pulsestream.format": fmt,
        "pulsestream.resume": resume,
    }
    if port.isdigit():
        attributes["client.port"] = int(port)
    with _tracer.start_as_current_span(
        CONNECTION_SPAN,
        context=propagate.extract(_headers(headers)),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield ConnectionTrace(span)
        except Exception as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, repr(error)))
            raise


@contextlib.contextmanager
def refill_span(series: str, resolution: str, after: int, address: str) -> Iterator[Span]:
    """A CLIENT span around the one-off ``Subscribe`` that refills a topic's ring for a resuming client."""
    with _tracer.start_as_current_span(
        SUBSCRIBE_SPAN,
        kind=SpanKind.CLIENT,
        attributes={
            **_RPC_ATTRIBUTES,
            **_server(address),
            "pulsestream.purpose": "refill",
            "pulsestream.series": [series],
            "pulsestream.resolution": resolution,
            "pulsestream.after_sequence": after,
        },
    ) as span:
        yield span


@contextlib.contextmanager
def exporting_until_exit(
    provider: TracerProvider | None, on_signal: Callable[[int, FrameType | None], None]
) -> Iterator[None]:
    """Run the server inside; afterwards flush and shut ``provider`` down, then end as the signal says.

    uvicorn re-raises the SIGTERM/SIGINT that stopped it once it has shut
    down, under the handlers that were there before it started; the default
    ones end the process on the spot, so nothing after ``server.run()`` would
    run and the spans still batched would be lost. While this is active those
    signals go to ``on_signal`` (the server's own exit handler, for a signal
    that lands before uvicorn installs its handlers) and are noted; after the
    flush the original handlers are back and the noted signals are raised
    again, so the process still ends the way uvicorn means it to.
    """
    if provider is None:
        yield
        return
    caught: list[int] = []

    def note(sig: int, frame: FrameType | None) -> None:
        caught.append(sig)
        on_signal(sig, frame)

    originals = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        provider.shutdown()
        for sig, handler in originals.items():
            signal.signal(sig, handler)
        for number in dict.fromkeys(caught):
            signal.raise_signal(number)
