"""OTLP/gRPC metrics in, with the OpenTelemetry SDK's own exporter (a client nobody here wrote).

The SDK exports to the generator's port exactly as a service configured with
``OTEL_EXPORTER_OTLP_ENDPOINT=http://generator:50051`` would; its gauges, sums and
histograms must become series with the metric's unit and description.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from generator_streams import StartGenerator
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from pulsestream_generator.otlp import series_name
from pulsestream_generator.server import GeneratorApp

from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc

TOKEN = "otlp-test-token"


class Sdk:
    """A MeterProvider of its own (not the global one) exporting to the generator on demand."""

    def __init__(self, address: str, headers: dict[str, str] | None = None, service: str = "checkout") -> None:
        self.exporter = OTLPMetricExporter(endpoint=f"http://{address}", insecure=True, headers=headers, timeout=5)
        self.reader = PeriodicExportingMetricReader(self.exporter, export_interval_millis=3_600_000)
        self.provider = MeterProvider(metric_readers=[self.reader], resource=Resource.create({"service.name": service}))
        self.meter = self.provider.get_meter("test")

    async def export(self) -> bool:
        return await asyncio.to_thread(self.provider.force_flush, 10_000)

    def close(self) -> None:
        self.provider.shutdown(timeout_millis=5_000)


@pytest.fixture
async def sdks() -> AsyncIterator[list[Sdk]]:
    made: list[Sdk] = []
    yield made
    for sdk in made:  # its last export needs the generator, which runs on this loop: not from the loop's thread
        await asyncio.to_thread(sdk.close)


async def catalogue(app: GeneratorApp) -> dict[str, timeseries_pb2.SeriesInfo]:
    async with grpc.aio.insecure_channel(app.address) as channel:
        reply = await timeseries_pb2_grpc.TimeSeriesServiceStub(channel).ListSeries(timeseries_pb2.ListSeriesRequest())
    return {info.name: info for info in reply.series}


async def values(app: GeneratorApp, name: str) -> list[float]:
    async with grpc.aio.insecure_channel(app.address) as channel:
        call = timeseries_pb2_grpc.TimeSeriesServiceStub(channel).Subscribe(
            timeseries_pb2.SubscribeRequest(series=[name], after_sequence=time.time_ns() // 1_000_000 - 20_000)
        )
        message = await asyncio.wait_for(call.read(), 5)
        call.cancel()
    return [point.value for point in message.points]


async def test_the_sdks_gauge_becomes_a_series_with_its_unit_and_description(
    generator: GeneratorApp, sdks: list[Sdk]
) -> None:
    sdk = Sdk(generator.address)
    sdks.append(sdk)
    gauge = sdk.meter.create_gauge("checkout.latency", unit="ms", description="Checkout latency")
    gauge.set(42.5)
    assert await sdk.export()
    listed = await catalogue(generator)
    info = listed["checkout.latency"]
    assert (info.unit, info.description, info.origin) == ("ms", "Checkout latency", "published")
    assert await values(generator, "checkout.latency") == [42.5]


async def test_attributes_name_series_in_sorted_graphite_form_and_histograms_give_count_and_mean(
    generator: GeneratorApp, sdks: list[Sdk]
) -> None:
    sdk = Sdk(generator.address)
    sdks.append(sdk)
    counter = sdk.meter.create_counter("http.requests", unit="{request}")
    histogram = sdk.meter.create_histogram("http.duration", unit="ms")
    counter.add(3, {"route": "/cart", "method": "GET"})
    counter.add(1, {"method": "POST", "route": "/pay"})
    for observed in (10.0, 20.0, 30.0):
        histogram.record(observed, {"method": "GET"})
    assert await sdk.export()
    listed = await catalogue(generator)
    assert {"http.requests;method=GET;route=/cart", "http.requests;method=POST;route=/pay"} <= set(listed)
    assert await values(generator, "http.requests;method=GET;route=/cart") == [3.0]
    assert await values(generator, "http.duration.count;method=GET") == [3.0]
    assert await values(generator, "http.duration.mean;method=GET") == [20.0]
    histogram.record(100.0, {"method": "GET"})  # cumulative: the next export's interval holds this one only
    await asyncio.sleep(0.01)
    assert await sdk.export()
    assert await values(generator, "http.duration.count;method=GET") == [3.0, 1.0]
    assert await values(generator, "http.duration.mean;method=GET") == [20.0, 100.0]


async def test_exports_need_the_token_when_tokens_are_configured(
    start_generator: StartGenerator, sdks: list[Sdk]
) -> None:
    app = await start_generator(ingest_tokens=[TOKEN])
    anonymous = Sdk(app.address)
    allowed = Sdk(app.address, headers={"authorization": f"Bearer {TOKEN}"})
    sdks.extend([anonymous, allowed])
    anonymous.meter.create_gauge("anonymous.gauge").set(1)
    allowed.meter.create_gauge("allowed.gauge").set(1)
    await anonymous.export()  # UNAUTHENTICATED: not retryable, the SDK logs it and drops the batch
    assert await allowed.export()
    listed = await catalogue(app)
    assert "allowed.gauge" in listed and "anonymous.gauge" not in listed
    refused = app.metrics.ingest_requests.labels("Export", "UNAUTHENTICATED")._value.get()
    assert refused >= 1


def _gauge(name: str, value: float, t: int, **attributes: str) -> metrics_pb2.Metric:
    point = metrics_pb2.NumberDataPoint(
        as_double=value,
        time_unix_nano=t * 1_000_000,
        attributes=[
            common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v)) for k, v in attributes.items()
        ],
    )
    return metrics_pb2.Metric(name=name, gauge=metrics_pb2.Gauge(data_points=[point]))


async def test_points_that_cannot_be_stored_are_dropped_one_by_one_into_partial_success(
    start_generator: StartGenerator,
) -> None:
    app = await start_generator(ingest_otlp_max_series_per_metric=2)
    now = time.time_ns() // 1_000_000
    metrics = [
        _gauge("ok.gauge", 1.0, now),
        _gauge("nan.gauge", math.nan, now),
        _gauge("cpu", 1.0, now),  # a synthetic series' name
        *(_gauge("wide", 1.0, now, shard=str(i)) for i in range(3)),  # one attribute set over the cap
        _gauge("future.gauge", 1.0, now + 3_600_000),
    ]
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    request.resource_metrics.add().scope_metrics.add().metrics.extend(metrics)
    async with grpc.aio.insecure_channel(app.address) as channel:
        reply: Any = await metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(request)
    assert reply.partial_success.rejected_data_points == 4
    assert "nan.gauge" in reply.partial_success.error_message
    listed = await catalogue(app)
    assert {"ok.gauge", "wide;shard=0", "wide;shard=1"} <= set(listed)
    assert not {"nan.gauge", "wide;shard=2", "future.gauge"} & set(listed)


def test_series_names_from_otlp_are_deterministic_url_safe_and_bounded() -> None:
    assert series_name("checkout.latency") == "checkout.latency"
    assert series_name("a", [("b", "2"), ("a", "1")]) == series_name("a", [("a", "1"), ("b", "2")]) == "a;a=1;b=2"
    assert series_name("http.server.duration", [("route", "/api/{id}"), ("q", "x=1;y,z é")]) == (
        "http.server.duration;q=x_1_y_z__;route=/api/_id_"
    )
    long = series_name("m", [("k", "v" * 300)])
    assert len(long) == 128 and long[-9] == "~" and long != series_name("m", [("k", "v" * 299)])
    assert series_name("9lives") == "m9lives" and series_name("") == "metric"
