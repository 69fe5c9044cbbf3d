"""Real generator and streamer processes for the reliability tests, and what the kernel says about them.

Each service runs from its console script on a free loopback port, configured only by environment variables
(short frequency, retention, keepalive and backoff so faults play out in seconds). A process can be killed,
terminated, frozen (SIGSTOP) and restarted on the same port, which is what the fault tests need. Its resident
memory, open file descriptors and threads are read from ``/proc``, which is what the leak tests compare.
Start-up waits on conditions (the gRPC port accepts, ``/health`` answers), never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from loopback import free_port, port_open, wait_until
from processes import stop_process

BIN = Path(sys.executable).parent
#: Generator period in the reliability tests: consecutive sequences of a series differ by exactly this.
FREQUENCY_MS = 50
START_TIMEOUT = 60.0
#: Per-client limits lifted: every test client comes from 127.0.0.1 (limits have their own tests).
OPEN_LIMITS: dict[str, Any] = {
    "rateLimit": {"requestsPerSecond": 100000, "burst": 100000, "maxStreamsPerClient": 10000}
}


@dataclass
class Process:
    """One service process on a fixed port; may be stopped in every way and started again on that port."""

    name: str
    port: int
    env: dict[str, str]
    directory: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    settings_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}-{self.port}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        assert not self.alive(), f"{self.name} is already running"
        full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **self.env}
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts + 1} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(BIN / f"pulsestream-{self.name}")], env=full, stdout=log, stderr=subprocess.STDOUT
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; the kernel closes its sockets."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)  # a frozen process must be able to die
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the process freezes with every connection left open."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive():
            self.signal(signal.SIGCONT)

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait, timeout)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL if it will not go): the fixtures' clean-up."""
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
        stop_process(self.proc)

    # --- what the kernel says ---------------------------------------------------------------------

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{key} not in /proc/{self.pid}/status")

    def rss_kib(self) -> int:
        return self._status("VmRSS")

    def threads(self) -> int:
        return self._status("Threads")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    # --- HTTP (streamer) --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(self.url + "/health")
        body = response.json()
        assert isinstance(body, dict)
        return body

    async def health_or_none(self) -> dict[str, Any] | None:
        try:
            return await self.health()
        except (httpx.HTTPError, ValueError):
            return None

    async def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample of the streamer's /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        async with httpx.AsyncClient(timeout=10) as client:
            text = (await client.get(self.url + "/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    return float(sample.value)
        return 0.0

    async def wait_ready(self) -> None:
        """The gRPC port accepts (generator) or /health answers (streamer)."""

        def dead() -> bool:
            return not self.alive()

        if self.name == "generator":
            await wait_until(lambda: dead() or port_open(self.port), START_TIMEOUT, f"generator on :{self.port}")
        else:

            async def answers() -> bool:
                return dead() or await self.health_or_none() is not None

            await wait_until(answers, START_TIMEOUT, f"streamer on :{self.port}")
        assert self.alive(), f"{self.name} exited:\n{self.logs()[-3000:]}"

    def write_settings(self, text: str) -> None:
        """Replace the live settings file atomically (write aside, rename), as kubelet and editors do."""
        assert self.settings_path is not None
        aside = self.settings_path.with_name(self.settings_path.name + ".tmp")
        aside.write_text(text, encoding="utf-8")
        os.replace(aside, self.settings_path)


class Fleet:
    """Starts generators and streamers for one test and stops them all at its end (streamers first)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[Process] = []

    def _settings_file(self, name: str, port: int, document: dict[str, Any]) -> Path:
        path = self.directory / f"{name}-{port}.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        return path

    async def generator(self, settings: dict[str, Any] | None = None, *, start: bool = True, **env: str) -> Process:
        """A generator ticking every 50 ms (seed 42: replicas give identical points), 1 minute of history."""
        port = free_port()
        path = self._settings_file("generator", port, settings or {})
        full = {
            "GENERATOR_PORT": str(port),
            "GENERATOR_FREQUENCY": f"{FREQUENCY_MS}ms",
            "GENERATOR_RETENTION": "1m",
            "GENERATOR_SEED": "42",
            "GENERATOR_METRICS_PORT": "0",
            "GENERATOR_GRACE_PERIOD": "3s",
            # The streamer pings every second here; the generator must not answer that with too_many_pings.
            "GENERATOR_KEEPALIVE_MIN_CLIENT_INTERVAL": "1s",
            "PULSESTREAM_SETTINGS_FILE": str(path),
            "GENERATOR_SETTINGS_POLL_INTERVAL": "100ms",
            "LOG_LEVEL": "info",
            **env,
        }
        process = Process("generator", port, full, self.directory, settings_path=path)
        self.processes.append(process)
        if start:
            process.start()
            await process.wait_ready()
        return process

    async def streamer(
        self,
        generators: list[Process],
        settings: dict[str, Any] | None = None,
        *,
        port: int | None = None,
        start: bool = True,
        **env: str,
    ) -> Process:
        """A streamer on ``generators`` (a list means replicas) with short reconnect, keepalive and drain times."""
        port = port or free_port()
        path = self._settings_file("streamer", port, {**OPEN_LIMITS, **(settings or {})})
        full = {
            "STREAMER_PORT": str(port),
            "STREAMER_GENERATOR_ADDRESS": ",".join(g.address for g in generators),
            "STREAMER_RECONNECT_BASE": "50ms",
            "STREAMER_RECONNECT_CAP": "300ms",
            "STREAMER_KEEPALIVE_TIME": "1s",
            "STREAMER_KEEPALIVE_TIMEOUT": "1s",
            "STREAMER_CONNECT_TIMEOUT": "1s",
            "STREAMER_UNARY_TIMEOUT": "3s",
            "STREAMER_MAX_WINDOW": "30s",
            "STREAMER_DEFAULT_WINDOW": "2s",
            "STREAMER_READY_TIMEOUT": "3s",
            "STREAMER_GRACEFUL_SHUTDOWN": "3s",
            "STREAMER_SHUTDOWN_RETRY": "100ms",
            "STREAMER_SSE_RETRY": "200ms",
            "STREAMER_SWEEP_INTERVAL": "200ms",
            "PULSESTREAM_SETTINGS_FILE": str(path),
            "STREAMER_SETTINGS_POLL_INTERVAL": "100ms",
            "LOG_LEVEL": "info",
            **env,
        }
        process = Process("streamer", port, full, self.directory, settings_path=path)
        self.processes.append(process)
        if start:
            process.start()
            await process.wait_ready()
        return process

    def stop_all(self) -> None:
        for process in sorted(self.processes, key=lambda p: p.name != "streamer"):
            process.stop()
