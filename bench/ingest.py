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

With ``--history redis`` (or ``both``, side by side in one run) the generator keeps published history in
Redis Streams (``GENERATOR_HISTORY_URL``; a fresh ``redis-server`` on a loopback port per run, append-only
on, as the compose and Helm set-ups run it): the same two measurements, plus the Redis server's own CPU
per point, so the rows show what the shared history costs per point against the memory history.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from loopback import free_port, port_open
from services import Service, ServiceError

from bench.report import ratios
from bench.runner import _REPO, BENCH_ENV, Scenario, _generator, measure_target
from bench.services import cpu_seconds

#: Where published history lives in a run: the generator's memory, or Redis Streams.
HISTORIES = ("memory", "redis")

#: The published series the latency clients follow.
PUBLISHED = "bench.published"


def _producer(mode: str, port: int, logs: Path, *args: str) -> Service:
    argv = [sys.executable, "-m", "bench.producer", mode, "--target", f"127.0.0.1:{port}", *args]
    env = Service.environment(BENCH_ENV, {}, None, None)
    log = logs / f"producer-{mode}.log"
    return Service(f"producer-{mode}", argv, env, port=0, log=log, ready=lambda: True, cwd=_REPO)


@contextlib.contextmanager
def _history(kind: str, logs: Path) -> Iterator[tuple[dict[str, str], Service | None]]:
    """The generator's environment for ``kind``, with a fresh ``redis-server`` for ``redis``."""
    if kind == "memory":
        yield {}, None
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError("--history redis needs redis-server (apt-get install redis-server)")
    port = free_port()
    data = logs / f"redis-{port}"
    data.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
    env = Service.environment({}, {}, None, None)
    log = logs / f"redis-{port}.log"
    with Service("redis", argv, env, port=port, log=log, ready=lambda: port_open(port), cwd=_REPO) as redis:
        yield {"GENERATOR_HISTORY_URL": f"redis://127.0.0.1:{port}/0"}, redis


def _flood(
    scenario: Scenario, logs: Path, settings: Path, pre_encoded: bool, batch: int, *, history: str = "memory"
) -> list[dict[str, Any]]:
    label = "publish, pre-encoded" if pre_encoded else "publish, library"
    label += "" if history == "memory" else f" ({history})"
    with (
        _history(history, logs) as (env, redis),
        _generator(scenario, settings, logs, {"GENERATOR_INGEST_MAX_SERIES": "10000", **env}) as (gen, port),
    ):
        args = ["--duration", str(scenario.duration), "--batch-size", str(batch)]
        if pre_encoded:
            args.append("--pre-encoded")
        producer = _producer("flood", port, logs, *args)
        cpu0 = cpu_seconds(gen.pid)
        redis_cpu0 = cpu_seconds(redis.pid) if redis is not None else 0.0
        started = time.monotonic()
        with producer:
            assert producer.proc is not None
            try:
                producer.proc.wait(scenario.duration + 120)
            except subprocess.TimeoutExpired as error:
                raise ServiceError(f"{label}: the producer did not finish\n{producer.log_tail()}") from error
            elapsed = time.monotonic() - started
        cpu = cpu_seconds(gen.pid) - cpu0
        redis_cpu = cpu_seconds(redis.pid) - redis_cpu0 if redis is not None else 0.0
        lines = [line for line in producer.log.read_text().splitlines() if line.startswith("{")]
        if producer.proc.returncode != 0 or not lines:
            raise ServiceError(f"{label}: the producer failed\n{producer.log_tail()}")
        result = json.loads(lines[-1])
    accepted = int(result["accepted"])
    row = {
        "target": label,
        "history": history,
        "points": accepted,
        "points_per_s": accepted / result["seconds"],
        "server_cores": cpu / elapsed,
        "cpu_per_100k_points": cpu / accepted * 100_000 if accepted else None,
        "batches": result["batches"],
        "errors": [],
        "error_count": 0,
    }
    if redis is None:
        return [row]
    # The Redis server's own share of the work, as a row of its own (same points, its CPU).
    server = {
        "target": f"  redis-server, for {label.split(' (')[0].removeprefix('publish, ')}",
        "history": history,
        "points": accepted,
        "server_cores": redis_cpu / elapsed,
        "cpu_per_100k_points": redis_cpu / accepted * 100_000 if accepted else None,
        "errors": [],
        "error_count": 0,
    }
    return [row, server]


def _latency(scenario: Scenario, logs: Path, settings: Path, histories: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for history in histories:
        rows += _latency_of(scenario, logs, settings, history, synthetic=history == histories[-1])
    return rows


def _latency_of(
    scenario: Scenario, logs: Path, settings: Path, history: str, *, synthetic: bool
) -> list[dict[str, Any]]:
    published = replace(scenario, series=(PUBLISHED,))
    rows = []
    label = "published" if history == "memory" else f"published ({history})"
    with _history(history, logs) as (env, _), _generator(published, settings, logs, env) as (gen, port):
        run = scenario.warmup + scenario.duration + 60 + scenario.clients / 50
        producer = _producer("steady", port, logs, "--series", PUBLISHED, "--rate", str(1000 / scenario.period_ms),
                             "--duration", str(run))  # fmt: skip
        with producer:
            time.sleep(1.0)  # points flowing before the clients come, as in production
            row = measure_target("pulsestream", published, gen=gen, gen_port=port, settings=settings, logs=logs)
            rows.append({**row, "target": label, "history": history})
        if synthetic:
            comparison = replace(scenario, series=("cpu",))
            row = measure_target("pulsestream", comparison, gen=gen, gen_port=port, settings=settings, logs=logs)
            rows.append({**row, "target": "synthetic", "history": history})
    return rows


def run_ingest(
    scenario: Scenario, batch: int, log_root: Path | None = None, histories: tuple[str, ...] = ("memory",)
) -> list[dict[str, Any]]:
    """Both measurements, as two report scenarios (throughput rows, then latency rows with ratios).

    ``histories`` are the backends measured, side by side in this one run; with both, the ratios are
    Redis over memory (throughput and latency), else published over synthetic as before.
    """
    with ExitStack() as stack:
        if log_root is None:
            log_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pulsestream-bench-ingest-")))
        settings = log_root / "settings.json"
        document = scenario.settings_document() | {"published": [{"name": PUBLISHED, "unit": "value"}]}
        settings.write_text(json.dumps(document, indent=2))
        flood: list[dict[str, Any]] = []
        for pre_encoded in (False, True):
            for history in histories:
                try:
                    flood += _flood(scenario, log_root, settings, pre_encoded, batch, history=history)
                except ServiceError as error:
                    flood.append({"target": f"publish ({history})", "errors": [str(error)], "error_count": 1})
        try:
            latency = _latency(scenario, log_root, settings, histories)
        except ServiceError as error:
            latency = [{"target": "published", "errors": [str(error)], "error_count": 1}]
        by_target = {row["target"]: row for row in latency}
        names = ("published (redis)", "published") if len(histories) > 1 else ("published", "synthetic")
        if histories == ("redis",):
            names = ("published (redis)", "synthetic")
        both = all(name in by_target for name in names)
        library = [row for row in flood if row["target"].startswith("publish, library")]
        return [
            {
                "title": f"ingest: one producer flooding one generator, batches of {batch} points, "
                f"{scenario.duration:g}s",
                "label": "ingest throughput",
                "scenario": asdict(scenario),
                "results": flood,
                "ratios": ratios(library[-1], library[0]) if len(library) > 1 else None,
                "ratio_names": ("library, redis", "library, memory"),
            },
            {
                "title": f"ingest: publish -> browser, {scenario.clients} clients x {1000 / scenario.period_ms:g} "
                f"points/s, published series vs synthetic, {scenario.duration:g}s measured",
                "label": f"{scenario.clients} x {1000 // scenario.period_ms}/s",
                "scenario": asdict(scenario),
                "results": latency,
                "ratios": ratios(by_target[names[0]], by_target[names[1]]) if both else None,
                "ratio_names": names,
            },
        ]
