"""Real data in: ``pulsestream.v1.IngestService/Publish`` and OTLP ``MetricsService/Export``, on the gRPC port.

Both services take one batch per call and answer once it is stored, so a
producer knows exactly what to resend after a failure; resending is safe,
since a (series, timestamp) already stored counts as a duplicate
(:mod:`.publishedstore`). What each answers:

- ``Publish``: the counts of accepted, duplicate and out-of-order points;
  a bad point refuses the batch with INVALID_ARGUMENT naming it
  (:mod:`.publishing`); too many points in one request, or one series more
  than allowed, get RESOURCE_EXHAUSTED.
- ``Export``: OTLP's answer; points that cannot be stored are dropped one
  by one and counted in ``partial_success`` (:mod:`.otlp`), as the OTLP
  specification asks.
- Both: UNAUTHENTICATED without a configured token (:mod:`.auth`),
  RESOURCE_EXHAUSTED with a RetryInfo when too many batches are in flight
  (:mod:`.intake`), UNAVAILABLE while draining.

Every refusal carries its ErrorInfo reason (:mod:`pulsestream.refusals`).
Neither RPC is traced (a span per batch would cost more than the batch at
the rates producers send); both are counted in the metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

from pulsestream import refusals
from pulsestream.refusals import Reason
from pulsestream.v1 import ingest_pb2, ingest_pb2_grpc
from pulsestream_generator.auth import TokenCheck
from pulsestream_generator.clock import now_ms
from pulsestream_generator.hub import Hub
from pulsestream_generator.intake import Busy, Closed, Intake
from pulsestream_generator.metrics import GeneratorMetrics
from pulsestream_generator.otlp import Conversion, OtlpNames, convert
from pulsestream_generator.publishedstore import Outcome, Unavailable
from pulsestream_generator.publishing import Refused, Rules, check_publish
from pulsestream_generator.settings import GeneratorSettings

__all__ = ["INGEST_SERVICE_NAME", "OTLP_METRICS_SERVICE_NAME", "Ingest", "IngestServicer", "MetricsServicer"]

logger = logging.getLogger(__name__)

INGEST_SERVICE_NAME = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
OTLP_METRICS_SERVICE_NAME = metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name


@dataclass(frozen=True, slots=True)
class _Job:
    publish: ingest_pb2.PublishRequest | None = None
    export: metrics_service_pb2.ExportMetricsServiceRequest | None = None


@dataclass(frozen=True, slots=True)
class _Done:
    outcome: Outcome
    conversion: Conversion | None = None


class Ingest:
    """What both ingest services share: the token check, the intake and the rules of the moment."""

    def __init__(self, hub: Hub, settings: GeneratorSettings, metrics: GeneratorMetrics) -> None:
        self.hub = hub
        self.settings = settings
        self.metrics = metrics
        self.tokens = TokenCheck(settings.ingest_tokens)
        self.intake: Intake[_Job, _Done] = Intake(self._store, settings.ingest_max_in_flight)
        self.otlp_names = OtlpNames(settings.ingest_otlp_max_series_per_metric)
        metrics.ingest_in_flight.set_function(lambda: self.intake.in_flight)

    def rules(self) -> Rules:
        """The checks' view of the settings and the store, as they are now."""
        hub, settings = self.hub, self.settings
        store = hub.published
        return Rules(
            now=now_ms(),
            retention_ms=hub.retention_ms,
            synthetic=frozenset(hub.spec.series),
            exists=store.__contains__,
            room=max(0, settings.ingest_max_series - len(store)),
            max_series=settings.ingest_max_series,
            create_undeclared=settings.ingest_undeclared == "create",
            max_points=settings.ingest_max_points_per_request,
        )

    async def _store(self, job: _Job) -> _Done:
        """Run by the intake's one task, a batch at a time: check, then store (a refusal stores nothing)."""
        rules = self.rules()
        store = self.hub.published
        if job.publish is not None:
            try:
                batch = check_publish(job.publish, rules)
            except Refused:
                self.metrics.ingest_points.labels("refused").inc(len(job.publish.points))
                raise
            return _Done(await store.append(batch, rules.now))
        assert job.export is not None
        conversion = convert(job.export, rules, self.otlp_names, self.settings.ingest_otlp_resource_attributes)
        outcome = await store.append(conversion.batch, rules.now, conversion.meta)
        self.metrics.ingest_points.labels("refused").inc(conversion.rejected)
        return _Done(outcome, conversion)

    def _count(self, outcome: Outcome) -> None:
        points = self.metrics.ingest_points
        points.labels("accepted").inc(outcome.accepted)
        points.labels("duplicate").inc(outcome.duplicates)
        points.labels("out_of_order").inc(outcome.out_of_order)
        points.labels("late").inc(outcome.late)
        if outcome.created:
            logger.info("published series created", extra={"series": ",".join(outcome.created[:20])})

    async def handle(self, rpc: str, job: _Job, context: grpc.aio.ServicerContext) -> _Done:
        """Authenticate, submit, and answer with the outcome, or abort the call with the refusal's status."""
        try:
            refused = self.tokens.refusal(context.invocation_metadata())
            if refused is not None:
                message = (
                    "ingest needs authorization: Bearer TOKEN"
                    if refused is Reason.TOKEN_REQUIRED
                    else ("ingest token not accepted")
                )
                raise _Abort(refusals.status(refused, message))
            try:
                done = await self.intake.submit(job)
            except Busy as busy:
                retry_ms = max(1, round(busy.retry_after * 1000))
                raise _Abort(
                    refusals.status_retry_after(
                        Reason.INGEST_BUSY,
                        str(busy),
                        busy.retry_after,
                        max_in_flight=busy.limit,
                        retry_after_ms=retry_ms,
                    )
                ) from None
            except Closed:
                raise _Abort(refusals.status(Reason.SERVER_DRAINING, "server draining; resend this batch")) from None
            except Unavailable as error:
                raise _Abort(refusals.status(Reason.HISTORY_UNAVAILABLE, str(error), backend="redis")) from None
            except Refused as error:
                logger.debug("batch refused: %s", error, extra={"rpc": rpc, "peer": context.peer()})
                raise _Abort(refusals.status(error.reason, str(error), **error.metadata)) from None
        except _Abort as abort:
            self.metrics.ingest_requests.labels(rpc, abort.status.code.name).inc()
            await context.abort_with_status(abort.status)
            raise AssertionError("abort_with_status returned") from None  # pragma: no cover - it always raises
        self.metrics.ingest_requests.labels(rpc, "OK").inc()
        self._count(done.outcome)
        return done

    def close(self) -> None:
        """Draining: refuse new batches, answer the queued ones UNAVAILABLE (unstored)."""
        self.intake.close()


class _Abort(Exception):
    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    """``pulsestream.v1.IngestService``."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    async def Publish(
        self, request: ingest_pb2.PublishRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.PublishResponse:
        done = await self.ingest.handle("Publish", _Job(publish=request), context)
        outcome = done.outcome
        return ingest_pb2.PublishResponse(
            accepted=outcome.accepted, duplicates=outcome.duplicates, rejected_out_of_order=outcome.out_of_order
        )


class MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    """``opentelemetry.proto.collector.metrics.v1.MetricsService``: OTLP/gRPC metrics in."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    async def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: grpc.aio.ServicerContext
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        done = await self.ingest.handle("Export", _Job(export=request), context)
        conversion, outcome = done.conversion, done.outcome
        assert conversion is not None
        rejected = conversion.rejected + outcome.out_of_order
        if not rejected:
            return metrics_service_pb2.ExportMetricsServiceResponse()
        message = conversion.error or (
            f"{outcome.out_of_order} data points older than the newest point of their series (out of order)"
        )
        return metrics_service_pb2.ExportMetricsServiceResponse(
            partial_success=metrics_service_pb2.ExportMetricsPartialSuccess(
                rejected_data_points=rejected, error_message=message
            )
        )
