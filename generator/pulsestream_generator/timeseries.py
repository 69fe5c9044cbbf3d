"""``pulsestream.v1.TimeSeriesService``: the catalogue and the Subscribe stream.

Status codes (the proto's contract). Each but INTERNAL also carries a
``google.rpc.ErrorInfo`` with a reason and metadata (:mod:`pulsestream.refusals`),
which is what clients match; the message is for people:

- INVALID_ARGUMENT: the request is wrong; the message names the field
  (BAD_ARGUMENT, UNKNOWN_SERIES, UNKNOWN_RESOLUTION, START_IN_FUTURE,
  HISTORY_NOT_RETAINED; ``field`` in the metadata).
- RESOURCE_EXHAUSTED: the subscriber fell further behind than its buffer
  (SUBSCRIBER_TOO_SLOW, with the ``after_sequence`` to resubscribe with) or
  than the history during replay (REPLAY_FELL_BEHIND).
- UNAVAILABLE: the server is draining (SERVER_DRAINING); reconnect (to
  another replica) and resume with ``after_sequence``.
- NOT_FOUND: a series of the stream was removed by the live settings (SERIES_REMOVED).
- INTERNAL: a fault of ours; logged with its traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from opentelemetry.trace import Span

from pulsestream import refusals
from pulsestream.refusals import Reason
from pulsestream.spec import RESOLUTIONS
from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc
from pulsestream_generator import tracing
from pulsestream_generator.clock import now_ms
from pulsestream_generator.gate import Gate, GateClosed
from pulsestream_generator.hub import Hub
from pulsestream_generator.live import EndReason, StreamEnded
from pulsestream_generator.metrics import GeneratorMetrics
from pulsestream_generator.query import InvalidArgument, Query, parse
from pulsestream_generator.source import describe
from pulsestream_generator.wire import duration

logger = logging.getLogger(__name__)

SERVICE_NAME = timeseries_pb2.DESCRIPTOR.services_by_name["TimeSeriesService"].full_name

#: The refusal reason (and so the status code, :data:`pulsestream.refusals.CODES`) each way a stream ends.
_REFUSAL = {
    EndReason.OVERFLOW: Reason.SUBSCRIBER_TOO_SLOW,
    EndReason.REPLAY_BEHIND: Reason.REPLAY_FELL_BEHIND,
    EndReason.DRAINING: Reason.SERVER_DRAINING,
    EndReason.SERIES_REMOVED: Reason.SERIES_REMOVED,
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
                    origin="synthetic",
                )
            )
        published = self.hub.published
        for name in published.names():
            meta = published.meta(name)
            entries.append(
                timeseries_pb2.SeriesInfo(
                    name=name,
                    unit=meta.unit,
                    description=meta.description or "Published series.",
                    expected_min=meta.expected_min,
                    expected_max=meta.expected_max,
                    origin="published",
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
            query = await self._accept(request, context, span, peer)
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
                # Nothing was sent yet: the request's own cursor resumes exactly.
                failure = StreamEnded(EndReason.DRAINING, "server draining, reconnect", after_sequence=query.after)
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
                await context.abort_with_status(
                    refusals.status(_REFUSAL[failure.reason], str(failure), **failure.metadata)
                )

    async def _accept(
        self, request: timeseries_pb2.SubscribeRequest, context: grpc.aio.ServicerContext, span: Span, peer: str
    ) -> Query:
        """The validated query, or the call aborted: UNAVAILABLE while draining, INVALID_ARGUMENT if wrong."""
        if self.gate.closed:
            with tracing.current(span):
                logger.debug("stream refused: draining", extra={"peer": peer})
            await context.abort_with_status(refusals.status(Reason.SERVER_DRAINING, "server draining, reconnect"))
        try:
            query = parse(
                request,
                known=self.hub.spec.series,
                history=self.hub.history,
                retention_ms=self.hub.retention_ms,
                now=now_ms(),
                published=self.hub.published,
            )
        except InvalidArgument as error:
            with tracing.current(span):
                logger.debug("stream rejected: %s", error, extra={"peer": peer})
            await context.abort_with_status(refusals.status(error.reason, str(error), **error.metadata))
        with tracing.current(span):
            logger.debug(
                "stream opened",
                extra={
                    "peer": peer,
                    "series": ",".join(query.series),
                    "resolution": query.resolution,
                    "start": request.WhichOneof("start") or "live",
                    "after": query.after,
                },
            )
        return query
