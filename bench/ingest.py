"""``python -m bench --scenario ingest``: real data in, measured next to the synthetic path.

Two measurements in one run, each against freshly started real processes:

1. Throughput: one generator, one producer process flooding it (``bench.producer flood``) for
   the measured window: points per second the generator accepted (acknowledged), through the
   library (``AsyncPublisher``, batches of ``--ingest-batch`` points, one in flight) and with
   requests encoded before the clock starts (the generator alone). The generator's CPU is read
   from ``/proc`` as for the fan-out targets.
2. Publish -> browser latency: the generator, the streamer and N SSE clients (the load client
   of the fan-out benchmark) on one published series, fed by a steady producer at R points/s
   whose points carry the time they were published; then the same N clients on a synthetic
   series at the same rate, as the comparison row. Latency is receive time minus the point's
   timestamp, for every point of every client.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from services import Service, ServiceError

from bench.report import ratios
from bench.runner import _REPO, BENCH_ENV, Scenario, _generator, measure_target
from bench.services import cpu_seconds

#: The published series the latency clients follow.
PUBLISHED = "bench.published"


def _producer(mode: str, port: int, logs: Path, *args: str) -> Service:
    argv = [sys.executable, "-m", "bench.producer", mode, "--target", f"127.0.0.1:{port}", *args]
    env = Service.environment(BENCH_ENV, {}, None, None)
    log = logs / f"producer-{mode}.log"
    return Service(f"producer-{mode}", argv, env, port=0, log=log, ready=lambda: True, cwd=_REPO)


def _flood(scenario: Scenario, logs: Path, settings: Path, pre_encoded: bool, batch: int) -> dict[str, Any]:
    label = "publish, pre-encoded" if pre_encoded else "publish, library"
    with _generator(scenario, settings, logs, {"GENERATOR_INGEST_MAX_SERIES": "10000"}) as (gen, port):
        args = ["--duration", str(scenario.duration), "--batch-size", str(batch)]
        if pre_encoded:
            args.append("--pre-encoded")
        producer = _producer("flood", port, logs, *args)
        cpu0 = cpu_seconds(gen.pid)
        started = time.monotonic()
        with producer:
            assert producer.proc is not None
            try:
                producer.proc.wait(scenario.duration + 120)
            except subprocess.TimeoutExpired as error:
                raise ServiceError(f"{label}: the producer did not finish\n{producer.log_tail()}") from error
            elapsed = time.monotonic() - started
        cpu = cpu_seconds(gen.pid) - cpu0
        lines = [line for line in producer.log.read_text().splitlines() if line.startswith("{")]
        if producer.proc.returncode != 0 or not lines:
            raise ServiceError(f"{label}: the producer failed\n{producer.log_tail()}")
        result = json.loads(lines[-1])
    accepted = int(result["accepted"])
    return {
        "target": label,
        "points": accepted,
        "points_per_s": accepted / result["seconds"],
        "server_cores": cpu / elapsed,
        "cpu_per_100k_points": cpu / accepted * 100_000 if accepted else None,
        "batches": result["batches"],
        "errors": [],
        "error_count": 0,
    }


def _latency(scenario: Scenario, logs: Path, settings: Path) -> list[dict[str, Any]]:
    published = replace(scenario, series=(PUBLISHED,))
    synthetic = replace(scenario, series=("cpu",))
    rows = []
    with _generator(published, settings, logs) as (gen, port):
        run = scenario.warmup + scenario.duration + 60 + scenario.clients / 50
        producer = _producer("steady", port, logs, "--series", PUBLISHED, "--rate", str(1000 / scenario.period_ms),
                             "--duration", str(run))  # fmt: skip
        with producer:
            time.sleep(1.0)  # points flowing before the clients come, as in production
            row = measure_target("pulsestream", published, gen=gen, gen_port=port, settings=settings, logs=logs)
            rows.append({**row, "target": "published"})
        row = measure_target("pulsestream", synthetic, gen=gen, gen_port=port, settings=settings, logs=logs)
        rows.append({**row, "target": "synthetic"})
    return rows


def run_ingest(scenario: Scenario, batch: int, log_root: Path | None = None) -> list[dict[str, Any]]:
    """Both measurements, as two report scenarios (throughput rows, then latency rows with ratios)."""
    with ExitStack() as stack:
        if log_root is None:
            log_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pulsestream-bench-ingest-")))
        settings = log_root / "settings.json"
        document = scenario.settings_document() | {"published": [{"name": PUBLISHED, "unit": "value"}]}
        settings.write_text(json.dumps(document, indent=2))
        flood = []
        for pre_encoded in (False, True):
            try:
                flood.append(_flood(scenario, log_root, settings, pre_encoded, batch))
            except ServiceError as error:
                flood.append({"target": "publish", "errors": [str(error)], "error_count": 1})
        try:
            latency = _latency(scenario, log_root, settings)
        except ServiceError as error:
            latency = [{"target": "published", "errors": [str(error)], "error_count": 1}]
        by_target = {row["target"]: row for row in latency}
        both = "published" in by_target and "synthetic" in by_target
        return [
            {
                "title": f"ingest: one producer flooding one generator, batches of {batch} points, "
                f"{scenario.duration:g}s",
                "label": "ingest throughput",
                "scenario": asdict(scenario),
                "results": flood,
                "ratios": None,
            },
            {
                "title": f"ingest: publish -> browser, {scenario.clients} clients x {1000 / scenario.period_ms:g} "
                f"points/s, published series vs synthetic, {scenario.duration:g}s measured",
                "label": f"{scenario.clients} x {1000 // scenario.period_ms}/s",
                "scenario": asdict(scenario),
                "results": latency,
                "ratios": ratios(by_target["published"], by_target["synthetic"]) if both else None,
                "ratio_names": ("published", "synthetic"),
            },
        ]
