"""``pulsestream.v1.TimeSeriesService``: the catalogue and the Subscribe stream.

Status codes (the proto's contract):

- INVALID_ARGUMENT: the request is wrong; the message names the field.
- RESOURCE_EXHAUSTED: the subscriber fell further behind than its buffer
  (or than the history during replay); resubscribe with ``after_sequence``.
- UNAVAILABLE: the server is draining; reconnect (to another replica) and
  resume with ``after_sequence``.
- NOT_FOUND: a series of the stream was removed by the live settings.
- INTERNAL: a fault of ours; logged with its traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from pulsestream.spec import RESOLUTIONS
from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc
from pulsestream_generator import tracing
from pulsestream_generator.clock import now_ms
from pulsestream_generator.gate import Gate, GateClosed
from pulsestream_generator.hub import EndReason, Hub, StreamEnded
from pulsestream_generator.metrics import GeneratorMetrics
from pulsestream_generator.query import InvalidArgument, parse
from pulsestream_generator.source import describe
from pulsestream_generator.wire import duration

logger = logging.getLogger(__name__)

SERVICE_NAME = timeseries_pb2.DESCRIPTOR.services_by_name["TimeSeriesService"].full_name

_STATUS = {
    EndReason.OVERFLOW: grpc.StatusCode.RESOURCE_EXHAUSTED,
    EndReason.REPLAY_BEHIND: grpc.StatusCode.RESOURCE_EXHAUSTED,
    EndReason.DRAINING: grpc.StatusCode.UNAVAILABLE,
    EndReason.SERIES_REMOVED: grpc.StatusCode.NOT_FOUND,
}


class TimeSeriesServicer(timeseries_pb2_grpc.TimeSeriesServiceServicer):
    """Validates requests and turns hub streams into gRPC streams with the right status."""

    def __init__(self, hub: Hub, gate: Gate, metrics: GeneratorMetrics) -> None:
        self.hub = hub
        self.gate = gate
        self.metrics = metrics

    async def ListSeries(
        self, request: timeseries_pb2.ListSeriesRequest, context: grpc.aio.ServicerContext
    ) -> timeseries_pb2.ListSeriesResponse:
        spec = self.hub.spec
        entries = []
        for name in spec.series:
            info = describe(name)
            entries.append(
                timeseries_pb2.SeriesInfo(
                    name=info.name,
                    unit=info.unit,
                    description=info.description,
                    expected_min=info.expected_min,
                    expected_max=info.expected_max,
                    shape=info.shape,
                )
            )
        return timeseries_pb2.ListSeriesResponse(
            series=entries,
            frequency=duration(spec.frequency.seconds),
            retention=duration(spec.retention.seconds),
            resolutions=list(RESOLUTIONS),
        )

    async def Subscribe(
        self, request: timeseries_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[timeseries_pb2.SubscribeResponse]:
        peer = context.peer()
        with tracing.subscribe_span(request, context, peer) as span:
            if self.gate.closed:
                with tracing.current(span):
                    logger.debug("stream refused: draining", extra={"peer": peer})
                await context.abort(grpc.StatusCode.UNAVAILABLE, "server draining, reconnect")
            try:
                query = parse(
                    request,
                    known=self.hub.spec.series,
                    history=self.hub.history,
                    retention_ms=self.hub.retention_ms,
                    now=now_ms(),
                )
            except InvalidArgument as error:
                with tracing.current(span):
                    logger.debug("stream rejected: %s", error, extra={"peer": peer})
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            start = request.WhichOneof("start") or "live"
            with tracing.current(span):
                logger.debug(
                    "stream opened",
                    extra={
                        "peer": peer,
                        "series": ",".join(query.series),
                        "resolution": query.resolution,
                        "start": start,
                        "after": query.after,
                    },
                )
            self.metrics.stream_starts.labels("Subscribe").inc()
            gauge = self.metrics.subscribers.labels(query.resolution)
            sent = 0
            reason = "cancelled"
            failure: StreamEnded | None = None
            try:
                with self.gate.admit():
                    gauge.inc()
                    self.metrics.peer_opened(peer)
                    try:
                        async with contextlib.aclosing(self.hub.stream(query)) as stream:
                            async for response in stream:
                                yield response
                                sent += len(response.points)
                                self.metrics.points_sent.inc(len(response.points))
                    finally:
                        gauge.dec()
                        self.metrics.peer_closed(peer)
            except GateClosed:
                reason = EndReason.DRAINING.value
                failure = StreamEnded(EndReason.DRAINING, "server draining, reconnect")
            except StreamEnded as ended:
                reason = ended.reason.value
                failure = ended
            except Exception:
                reason = "error"
                with tracing.current(span):
                    logger.exception("stream failed", extra={"peer": peer, "points_sent": sent})
                raise
            finally:
                self.metrics.stream_ends.labels("Subscribe", reason).inc()
                span.set_attributes({"pulsestream.points_sent": sent, "pulsestream.end_reason": reason})
                with tracing.current(span):
                    logger.debug(
                        "stream closed",
                        extra={"peer": peer, "reason": reason, "points_sent": sent, "series": ",".join(query.series)},
                    )
            if failure is not None:
                await context.abort(_STATUS[failure.reason], str(failure))
