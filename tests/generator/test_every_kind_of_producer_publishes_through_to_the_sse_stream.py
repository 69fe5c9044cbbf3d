"""Real data in, end to end: real producers -> the real generator -> the real streamer -> SSE and a browser.

Producers: the library, the CLI, the OpenTelemetry SDK's own OTLP exporter, grpcurl and a Node
client on @grpc/grpc-js (clients nobody here wrote). Every published point must come out of the
streamer's ``/v1/stream`` like a synthetic one. One generator (with declared series) and one streamer,
from their console scripts, serve the module. (A generator killed while a producer publishes:
``test_a_generator_killed_mid_publish_loses_no_acknowledged_point_and_duplicates_none.py``.)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from grpcurl_tool import grpcurl
from loopback import wait_until
from services import MINUTE_WINDOWS, Generator, Stack, StreamerProcess, clean_environment, console_script
from sse import EventSource, following, now_ms
from tools import ROOT, artifact, chromium, node, npm

from pulsestream.publish import Publisher

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).parent / "node"
DECLARED = json.dumps(
    [
        {"name": "orders", "unit": "orders/min", "description": "Orders placed", "expectedRange": [0, 100]},
        {"name": "cli.orders"},
    ]
)


@dataclass
class Ingest:
    """The module's generator (where producers publish) and streamer (where the points come out)."""

    generator: Generator
    streamer: StreamerProcess
    stack: Stack

    @property
    def address(self) -> str:
        return self.generator.address

    def stream(self, series: str) -> EventSource:
        """A browser's EventSource on a minute of ``series``."""
        return EventSource([self.streamer.url], f"/v1/stream?series={series}&window=1m")

    async def series(self) -> dict[str, dict[str, Any]]:
        """``/v1/series`` by name."""
        async with httpx.AsyncClient(timeout=10) as client:
            body = (await client.get(f"{self.streamer.url}/v1/series")).json()
        return {entry["name"]: entry for entry in body}


@pytest.fixture(scope="module")
def ingest(module_stack: Stack) -> Ingest:
    generator = module_stack.generator(GENERATOR_PUBLISHED=DECLARED, GENERATOR_INGEST_CLOSE_DELAY="500ms")
    return Ingest(generator, module_stack.streamer(generator, **MINUTE_WINDOWS), module_stack)


async def test_the_library_and_the_cli_publish_and_their_points_come_out_of_the_sse_stream(ingest: Ingest) -> None:
    listed = await ingest.series()
    assert listed["orders"]["unit"] == "orders/min" and listed["orders"]["origin"] == "published"
    assert listed["orders"]["expectedRange"] == [0.0, 100.0] and listed["cpu"]["origin"] == "synthetic"
    async with following(ingest.stream("orders,cli.orders")) as [reader]:
        await reader.wait_for(lambda e: e.event == "snapshot", what="the snapshot")
        sent = []

        def produce() -> None:
            with Publisher(ingest.address, linger=0.02) as publisher:
                for i in range(50):
                    t = now_ms() + i
                    publisher.record("orders", float(i), t=t)
                    sent.append(t)
                publisher.flush(10)

        await asyncio.to_thread(produce)
        lines = "".join(f'{{"series": "cli.orders", "v": {i}}}\n' for i in range(10))
        cli = await asyncio.to_thread(
            subprocess.run,
            [console_script("pulsestream-publish"), "--target", ingest.address, "-q"],
            input=lines,
            env=clean_environment(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        await wait_until(
            lambda: reader.seqs.get("orders") == sent and len(reader.seqs.get("cli.orders", [])) == 10,
            timeout=20,
            what=f"every published point in the SSE stream\n{ingest.stack.report()}",
        )
    assert [p["v"] for p in reader.points("orders")] == [float(i) for i in range(50)]
    assert (await ingest.series())["cli.orders"]["origin"] == "published"


async def test_grpcurl_lists_and_describes_the_ingest_service_and_publishes_through_it(ingest: Ingest) -> None:
    listed = await grpcurl(ingest.address, "list")
    assert {"pulsestream.v1.IngestService", "opentelemetry.proto.collector.metrics.v1.MetricsService"} <= set(
        listed.stdout.split()
    ), listed.stderr
    described = await grpcurl(ingest.address, "describe", "pulsestream.v1.IngestService")
    assert "rpc Publish ( .pulsestream.v1.PublishRequest ) returns ( .pulsestream.v1.PublishResponse )" in (
        described.stdout
    )
    body = json.dumps(
        {"points": [{"series": "grpcurl.orders", "value": 7.5}, {"series": "grpcurl.orders", "value": 8}]}
    )
    published = await grpcurl("-d", body, ingest.address, "pulsestream.v1.IngestService/Publish")
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout) == {"accepted": "2"}
    refused = await grpcurl(
        "-d", '{"points": [{"series": "cpu", "value": 1}]}', ingest.address, "pulsestream.v1.IngestService/Publish"
    )
    assert refused.returncode == 64 + 3 and "SYNTHETIC_SERIES" in refused.stderr + refused.stdout


async def test_a_node_client_on_grpc_js_publishes_and_gets_duplicates_and_refusals_right(ingest: Ingest) -> None:
    runner = node()
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").exists():
        install = await asyncio.to_thread(
            subprocess.run,
            [npm(), "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert install.returncode == 0, install.stderr
    result = await asyncio.to_thread(
        subprocess.run,
        [runner, "publish.mjs", ingest.address, str(ROOT / "proto"), "node.orders"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    first, again, refused = (json.loads(line) for line in result.stdout.splitlines())
    assert (first["accepted"], first["duplicates"]) == ("3", "0")
    assert (again["accepted"], again["duplicates"]) == ("0", "3")
    assert refused["code"] == 3 and "synthetic" in refused["details"]
    async with following(ingest.stream("node.orders")) as [reader]:
        await wait_until(
            lambda: len(reader.seqs.get("node.orders", [])) == 3, timeout=20, what="the Node client's points"
        )
    assert [p["v"] for p in reader.points("node.orders")] == [10.0, 11.0, 12.0]


class OtelGauge:
    """The OpenTelemetry SDK exporting an observable gauge over OTLP/gRPC every 200 ms, in its own threads."""

    def __init__(self, address: str) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.metrics import CallbackOptions, Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        self.value = 40.0
        self.lock = threading.Lock()
        exporter = OTLPMetricExporter(endpoint=f"http://{address}", insecure=True, timeout=5)
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=200)
        self.provider = MeterProvider(metric_readers=[reader])

        def observe(options: CallbackOptions) -> list[Observation]:
            with self.lock:
                self.value += 1.0
                return [Observation(self.value)]

        self.provider.get_meter("checkout").create_observable_gauge(
            "checkout.latency", callbacks=[observe], unit="ms", description="Checkout latency, from the OTel SDK"
        )

    def close(self) -> None:
        self.provider.shutdown(timeout_millis=5_000)


@pytest.mark.browser
async def test_an_otel_sdk_gauge_appears_in_an_sse_stream_and_on_the_dashboard(ingest: Ingest) -> None:
    gauge = await asyncio.to_thread(OtelGauge, ingest.address)
    try:
        await wait_until(
            lambda: _has(ingest, "checkout.latency"),
            timeout=20,
            what=f"the gauge in /v1/series\n{ingest.stack.report()}",
        )
        listed = await ingest.series()
        assert listed["checkout.latency"]["unit"] == "ms" and listed["checkout.latency"]["origin"] == "published"
        async with following(ingest.stream("checkout.latency")) as [reader]:
            await wait_until(lambda: len(reader.seqs.get("checkout.latency", [])) >= 3, timeout=20, what="gauge points")
        values = [p["v"] for p in reader.points("checkout.latency")]
        assert all(b > a for a, b in itertools.pairwise(values)), values
        await _dashboard_shows(ingest, "checkout.latency")
    finally:
        await asyncio.to_thread(gauge.close)


async def _has(ingest: Ingest, name: str) -> bool:
    return name in await ingest.series()


async def _dashboard_shows(ingest: Ingest, name: str) -> None:
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1200, "height": 700})
        await page.goto(f"{ingest.streamer.url}/?series={name}&resolution=raw&window=1m")
        await page.wait_for_function(
            """(name) => {
                const row = [...document.querySelectorAll("#latest tbody tr")]
                  .find((r) => r.textContent.includes(name));
                const line = document.querySelector(`#chart g.lane[data-series="${name}"] path.line`);
                return row && Number.isFinite(parseFloat(row.querySelector("td.value").dataset.value))
                  && line && Number(line.dataset.points) >= 2;
            }""",
            arg=name,
            timeout=30_000,
        )
        text = await page.inner_text("#latest")
        assert name in text and "ms" in text
        await page.screenshot(path=str(artifact("dashboard-published.png")))
