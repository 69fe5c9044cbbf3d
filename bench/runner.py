"""One benchmark scenario: generator, then each target in turn under the same load.

For a scenario the generator starts once (on a free port, at the scenario's
frequency) and serves both targets, one after the other, so pulsestream and
the reference are measured side by side on the same machine minutes apart.
Per target: start it, wait for health, read its baseline memory with no
client, open the connections, warm up, then measure for ``duration`` seconds:
points and events received inside the window, latency per point, the
target's CPU seconds and memory growth, and continuity from ``seq``.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from loopback import free_port
from services import Generator, Service, ServiceError, StreamerProcess, clean_environment, http_answers

from bench import profiling
from bench.loadclient import LoadPlan, LoadRun, Tally
from bench.report import ratios
from bench.services import cpu_seconds, rss_bytes

TARGETS = ("pulsestream", "reference")
_BUCKET_MS = {"raw": 0, "1s": 1000, "5s": 5000, "1m": 60000}
_REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Scenario:
    """What load to apply: N clients, R points/s per series, for D seconds."""

    clients: int
    rate: int
    duration: float
    warmup: float = 3.0
    series: tuple[str, ...] = ("cpu",)
    resolution: str = "raw"
    flush_interval: str = "50ms"
    window: str = "1s"
    heartbeat: str = "15s"
    idle: bool = False
    client_processes: int = 0  # 0 = choose from the number of clients
    streamer_command: tuple[str, ...] = ()  # empty = the installed pulsestream-streamer

    @property
    def period_ms(self) -> int:
        """The generator period for ``rate`` points/s (whole milliseconds, 10 ms at least)."""
        return max(10, round(1000 / self.rate))

    @property
    def step_ms(self) -> int:
        """How far apart consecutive sequences of one series are."""
        return _BUCKET_MS.get(self.resolution) or self.period_ms

    @property
    def slug(self) -> str:
        """A file-name-safe label, e.g. ``n1000-r100-raw`` or ``idle10000``."""
        return f"idle{self.clients}" if self.idle else f"n{self.clients}-r{1000 // self.period_ms}-{self.resolution}"

    @property
    def label(self) -> str:
        """A short name for tables, e.g. ``1000 x 100/s`` or ``10000 idle``."""
        return f"{self.clients} idle" if self.idle else f"{self.clients} x {1000 // self.period_ms}/s"

    @property
    def title(self) -> str:
        rate = f"{1000 / self.period_ms:g} points/s"
        kind = f"{self.clients} idle connections" if self.idle else f"{self.clients} clients x {rate}"
        return (
            f"{kind}, series {','.join(self.series)}, resolution {self.resolution}, "
            f"flush {self.flush_interval}, {self.duration:g}s measured"
        )

    def processes(self) -> int:
        return self.client_processes or min(2, max(1, math.ceil(self.clients / 500)))

    def path(self) -> str:
        query = {"series": ",".join(self.series), "resolution": self.resolution, "window": self.window, "format": "d3"}
        return "/v1/stream?" + urlencode(query, safe=",")

    def settings_document(self) -> dict[str, Any]:
        """The live settings file both services read (the shape of a StreamConfig spec)."""
        return {
            "frequency": f"{self.period_ms}ms",
            "series": sorted(set(self.series) | {"cpu", "memory", "requests", "latency"}),
            "flushInterval": self.flush_interval,
            "heartbeatInterval": self.heartbeat,
            "retention": "2m",
            # Every bench connection comes from 127.0.0.1: lift the per-client limits to their maxima.
            "rateLimit": {"requestsPerSecond": 100000, "burst": 1000000, "maxStreamsPerClient": 10000},
        }


#: What every benchmarked process runs with (instead of the tests' short timings): quiet logs, tracing off.
#: Tracing is off for every process: the reference has none, and the benchmark measures the data path.
#: Settings the bench needs are added per service below; nothing else of the caller's environment
#: that a service reads gets through (services.clean_environment).
BENCH_ENV = {"LOG_LEVEL": "warning", "OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "none"}


@contextmanager
def _generator(
    scenario: Scenario, settings_path: Path, log_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[Service, int]]:
    port = free_port()
    env = (extra_env or {}) | {
        "GENERATOR_METRICS_PORT": "0",
        "GENERATOR_FREQUENCY": f"{scenario.period_ms}ms",
        # The reference opens one gRPC stream per browser on one channel: allow all of them.
        "GENERATOR_MAX_CONCURRENT_STREAMS": "100000",
    }
    generator = Generator(port, log_dir / "generator.log", env, settings=settings_path, defaults=BENCH_ENV, cwd=_REPO)
    with generator:
        yield generator, port


def _target_service(
    target: str, scenario: Scenario, gen_port: int, settings_path: Path, log_dir: Path
) -> tuple[Service, int]:
    port = free_port()
    if target == "pulsestream":
        streamer = StreamerProcess(
            port,
            log_dir / "pulsestream.log",
            f"127.0.0.1:{gen_port}",
            settings=settings_path,
            defaults=BENCH_ENV,
            argv=scenario.streamer_command or None,
            cwd=_REPO,
        )
        return streamer, port
    argv = [
        sys.executable,
        "-m",
        "bench.reference",
        "--port",
        str(port),
        "--generator",
        f"127.0.0.1:{gen_port}",
        "--ping",
        str(_seconds(scenario.heartbeat)),
    ]
    env = clean_environment() | BENCH_ENV
    ready = http_answers(f"http://127.0.0.1:{port}/health")
    return Service(target, argv, env, port=port, log=log_dir / f"{target}.log", ready=ready, cwd=_REPO), port


def _prime(port: int, path: str, seconds: float) -> None:
    """Hold one stream open for ``seconds``; raise OSError unless it answers 200."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        status = sock.recv(65536).split(b"\r\n", 1)[0]
        if status.split(b" ")[1:2] != [b"200"]:
            raise ConnectionRefusedError(f"answered {status.decode(errors='replace')!r}")
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                if not sock.recv(65536):
                    break


def _seconds(duration: str) -> float:
    from pulsestream.durations import parse_seconds

    return parse_seconds(duration)


def _sleep_until(deadline: float, services: Sequence[Service]) -> None:
    while (left := deadline - time.time()) > 0:
        for service in services:
            service.check_alive()
        time.sleep(min(left, 0.2))


def _connect_all(load: LoadRun, service: Service, clients: int) -> float:
    """Wait for every connection, but not past a deadline, nor 20 s without progress; the seconds it took.

    A saturated target is then measured with the connections it accepted.
    """
    started = time.time()
    deadline = started + 60 + clients / 100
    progress, progress_at = -1, time.time()
    while (done := load.opened() + load.failed()) < clients and time.time() < deadline:
        service.check_alive()
        if done != progress:
            progress, progress_at = done, time.time()
        if not load.alive() or time.time() - progress_at > 20:
            break
        time.sleep(0.05)
    return round(time.time() - started, 2)


def _profile_summary(sampler: subprocess.Popen[bytes], path: Path) -> dict[str, Any] | None:
    """Wait for py-spy to finish sampling; what its profile says, if it wrote one."""
    try:
        sampler.wait(timeout=30)
    except subprocess.TimeoutExpired:
        sampler.kill()
        sampler.wait()
    return {"file": str(path), **profiling.summarise(path.read_text())} if path.exists() else None


def measure_target(
    target: str,
    scenario: Scenario,
    *,
    gen: Service,
    gen_port: int,
    settings: Path,
    logs: Path,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the scenario's load against one target; returns the row of numbers the report prints."""
    service, port = _target_service(target, scenario, gen_port, settings, logs)
    row: dict[str, Any] = {"target": target, "clients": scenario.clients, "errors": []}
    with service:  # started, and ready when /health answers
        # One short stream first, so lazy start-up work (imports, the first upstream subscription
        # and its history) lands in the baseline rather than in the per-connection memory.
        try:
            _prime(port, scenario.path(), seconds=1.0)
        except OSError as error:
            raise ServiceError(f"{target} refused the priming stream: {error}\n{service.log_tail()}") from error
        time.sleep(0.5)
        rss_base = rss_bytes(service.pid)
        plan = LoadPlan(
            host="127.0.0.1",
            port=port,
            path=scenario.path(),
            connections=scenario.clients,
            step_ms=scenario.step_ms,
            latency_offset_ms=_BUCKET_MS.get(scenario.resolution, 0),
            max_duration=120 + scenario.duration + scenario.warmup + scenario.clients / 50,
        )
        with LoadRun(plan, scenario.processes()) as load:
            row["connect_seconds"] = _connect_all(load, service, scenario.clients)
            start = time.time() + scenario.warmup
            end = start + scenario.duration
            load.control.set_window(start, end)
            _sleep_until(start, [service, gen])
            cpu0, gen_cpu0 = cpu_seconds(service.pid), cpu_seconds(gen.pid)
            sampler = None
            if profile_dir is not None:
                profile_path = profile_dir / f"{target}-{scenario.slug}.txt"
                sampler = profiling.start(service.pid, scenario.duration, profile_path)
            load_cpu0 = sum(cpu_seconds(pid) for pid in load.pids)
            _sleep_until(end, [service, gen])
            cpu1, gen_cpu1 = cpu_seconds(service.pid), cpu_seconds(gen.pid)
            load_cpu1 = sum(cpu_seconds(pid) for pid in load.pids)
            rss_end = rss_bytes(service.pid)
            if sampler is not None and (profile := _profile_summary(sampler, profile_path)) is not None:
                row["profile"] = profile
            tally = load.collect(timeout=30 + scenario.clients / 200)
    row.update(_numbers(scenario, tally, cpu1 - cpu0, rss_end - rss_base, rss_base))
    if tally.refused or tally.closed_early:
        row["errors"].append(f"end of the {target} log:\n{service.log_tail(12)}")
    row["generator_cores"] = round((gen_cpu1 - gen_cpu0) / scenario.duration, 3)
    row["load_client_cores"] = round((load_cpu1 - load_cpu0) / scenario.duration, 3)
    return row


def _numbers(scenario: Scenario, tally: Tally, cpu: float, rss_growth: int, rss_base: int) -> dict[str, Any]:
    duration = scenario.duration
    opened = tally.opened
    expected = opened * len(scenario.series) * duration * 1000 / scenario.step_ms
    latency = tally.histogram.summary()
    errors = [f"{count} x {text}" for text, count in tally.errors.most_common(8)]
    if tally.refused:
        errors.insert(0, f"{tally.refused} connections refused, statuses {dict(tally.statuses)}")
    if opened < scenario.clients:
        errors.insert(0, f"only {opened} of {scenario.clients} connections opened")
    return {
        "connections": opened,
        "events_per_s": tally.events / duration,
        "points_per_s": tally.points / duration,
        "expected_points_per_s": expected / duration,
        "delivered_pct": 100.0 * tally.points / expected if expected and not scenario.idle else None,
        "points": tally.points,
        "events": tally.events,
        "snapshot_events": tally.snapshot_events,
        "p50": latency["p50"],
        "p90": latency["p90"],
        "p99": latency["p99"],
        "max": latency["max"],
        "negative_latencies": tally.histogram.negative,
        "server_cpu_seconds": round(cpu, 3),
        "server_cores": cpu / duration,
        "cpu_per_100k_points": cpu / tally.points * 100_000 if tally.points else None,
        "cpu_per_100k_events": cpu / tally.events * 100_000 if tally.events else None,
        "rss_base_mb": rss_base / 2**20,
        "rss_kb_per_connection": rss_growth / 1024 / opened if opened else None,
        "heartbeats_per_connection": tally.heartbeats / opened if opened else None,
        "gaps": tally.gaps,
        "missing": tally.missing,
        "duplicates": tally.duplicates,
        "resets": tally.resets,
        "linked_sequences": tally.linked,
        "closed_early": tally.closed_early,
        "continuity_examples": tally.examples,
        "worst_latency_by_second": [round(tally.worst_by_second[s], 1) for s in sorted(tally.worst_by_second)],
        "other_events": dict(tally.other_events),
        "statuses": {str(code): count for code, count in tally.statuses.items()},
        # Drops: streams the target ended early or told to go away (slow consumer, shutdown, ...).
        "drops": tally.closed_early + sum(n for name, n in tally.other_events.items() if name.startswith("notice:")),
        # Errors: connections never opened (refused, failed) and bytes the load client could not parse.
        "error_count": scenario.clients
        - opened
        + sum(n for text, n in tally.errors.items() if not text.startswith(("connect:", "server closed"))),
        "errors": errors,
    }


def run_scenario(
    scenario: Scenario, targets: Sequence[str], log_root: Path | None = None, profile_dir: Path | None = None
) -> dict[str, Any]:
    """Measure every target under ``scenario``; a target that fails to run gets a row with its error."""
    with ExitStack() as stack:
        if log_root is None:
            log_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pulsestream-bench-")))
        settings = log_root / "settings.json"
        settings.write_text(json.dumps(scenario.settings_document(), indent=2))
        results: list[dict[str, Any]] = []
        with _generator(scenario, settings, log_root) as (gen, gen_port):
            for target in targets:
                try:
                    results.append(
                        measure_target(
                            target,
                            scenario,
                            gen=gen,
                            gen_port=gen_port,
                            settings=settings,
                            logs=log_root,
                            profile_dir=profile_dir,
                        )
                    )
                except ServiceError as error:
                    results.append({"target": target, "errors": [str(error)], "error_count": 1})
        by_target = {row["target"]: row for row in results}
        both = "pulsestream" in by_target and "reference" in by_target
        return {
            "title": scenario.title,
            "label": scenario.label,
            "scenario": asdict(scenario),
            "results": results,
            "ratios": ratios(by_target["pulsestream"], by_target["reference"]) if both else None,
        }
