"""A real generator and a real streamer as processes, tracing to stdout, for the observability tests.

Both run from their console scripts with ``OTEL_TRACES_EXPORTER=console``:
each finished span is one JSON line on the process's stdout, which goes to a
file the tests read (:meth:`Process.spans`); logs are JSON lines on stderr, to
another file (:meth:`Process.logs`). The generator's metrics endpoint is on
its own free port. The streamer lets a topic go as soon as its last client
leaves (``STREAMER_HUB_LINGER=0ms``), so the upstream spans end, and are
exported, right after a test's request ends. Every wait polls a condition.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from loopback import free_port, port_open, wait_for
from processes import stop_process
from prometheus_client.parser import text_string_to_metric_families

BIN = Path(sys.executable).parent
_RUNS = itertools.count(1)
START_TIMEOUT = 60.0


def _json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().splitlines():
        if line.startswith(b"{"):
            with contextlib.suppress(orjson.JSONDecodeError):  # a line still being written
                records.append(orjson.loads(line))
    return records


def hex_id(value: str | None) -> str:
    """Span JSON writes ids as ``0x...``; logs and event meta write bare hex."""
    return (value or "").removeprefix("0x")


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path
    env: dict[str, str]

    def spans(self) -> list[dict[str, Any]]:
        return _json_lines(self.stdout)

    def logs(self) -> list[dict[str, Any]]:
        return _json_lines(self.stderr)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc)

    def diagnostics(self) -> str:
        return f"--- {self.name} stderr ---\n" + self.stderr.read_text(errors="replace")[-4000:]


def _spawn(name: str, env: dict[str, str], directory: Path, port: int) -> Process:
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    run = next(_RUNS)  # a restarted service on the same port gets files of its own
    stdout = directory / f"{name}-{port}-{run}.spans.jsonl"
    stderr = directory / f"{name}-{port}-{run}.log.jsonl"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen([str(BIN / f"pulsestream-{name}")], env=full, stdout=out, stderr=err)
    return Process(name, proc, port, stdout, stderr, full)


TRACING_ENV = {"OTEL_TRACES_EXPORTER": "console", "LOG_FORMAT": "json", "LOG_LEVEL": "debug"}


def start_generator(directory: Path, port: int | None = None, **env: str) -> Process:
    port = port or free_port()
    settings = directory / f"generator-{port}.yaml"
    settings.write_text("frequency: 50ms\nretention: 1m\n", encoding="utf-8")
    process = _spawn(
        "generator",
        {
            **TRACING_ENV,
            "GENERATOR_PORT": str(port),
            "GENERATOR_METRICS_PORT": str(free_port()),
            "PULSESTREAM_SETTINGS_FILE": str(settings),
            **env,
        },
        directory,
        port,
    )
    wait_for(lambda: port_open(port) or not process.alive(), START_TIMEOUT, f"generator on :{port}")
    assert process.alive(), process.diagnostics()
    return process


def start_streamer(directory: Path, generator_port: int, **env: str) -> Process:
    port = free_port()
    process = _spawn(
        "streamer",
        {
            **TRACING_ENV,
            "STREAMER_PORT": str(port),
            "STREAMER_GENERATOR_ADDRESS": f"127.0.0.1:{generator_port}",
            "STREAMER_HUB_LINGER": "0ms",
            "STREAMER_MAX_WINDOW": "30s",
            "STREAMER_RECONNECT_BASE": "50ms",
            "STREAMER_RECONNECT_CAP": "300ms",
            **env,
        },
        directory,
        port,
    )

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(lambda: healthy() or not process.alive(), START_TIMEOUT, f"streamer on :{port}")
    assert process.alive(), process.diagnostics()
    return process


def metrics(url: str) -> dict[str, float]:
    """One scrape through the Prometheus text parser: ``{sample name{labels}: value}``."""
    response = httpx.get(url, timeout=5.0)
    assert response.status_code == 200, response.text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def total(samples: dict[str, float], name: str) -> float:
    """Sum of a sample over all its label sets."""
    return sum(value for key, value in samples.items() if key == name or key.startswith(name + "{"))


@dataclass
class Stream:
    """What one SSE connection received: its events as (type, parsed data)."""

    events: list[tuple[str, dict[str, Any]]]


def read_stream(url: str, count: int, headers: dict[str, str] | None = None, timeout: float = 30.0) -> Stream:
    """Open an SSE stream, read ``count`` snapshot/points events, close it."""
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.Client(timeout=httpx.Timeout(timeout)) as client, client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, response.read()
        for event in iter_events(response.iter_lines()):
            if event[0] in ("snapshot", "points"):
                events.append(event)
                if len(events) >= count:
                    break
    return Stream(events)


def iter_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Minimal SSE parsing: ``event:`` and ``data:`` lines, a blank line ends an event."""
    kind, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield kind, orjson.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
