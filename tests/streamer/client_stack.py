"""A real generator and streamer for the client tests, each killable (SIGKILL, SIGTERM) and restartable on its port.

The processes run from their console scripts with a fixed 100 ms tick (sequences are tick times in epoch
ms, so a series is contiguous when consecutive sequences are exactly 100 apart), an API key holding a
``+`` (clients must encode it), limits lifted (every client is 127.0.0.1) and a short ``retry`` so
reconnects play out in a fraction of a second. Waiting is on conditions, never on sleeps.
(Written before the harness's ``tests/support/services.py``; it can move onto that.)
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from loopback import free_port, port_open, wait_until
from processes import stop_process

BIN = Path(sys.executable).parent
TICK_MS = 100
API_KEY = "client+test/key="
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Service:
    """One service process on a fixed port."""

    name: str
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **self.env}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / f"pulsestream-{self.name}")], env=full, stdout=out, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM and wait: the graceful way (the streamer sends server_shutdown)."""
        stop_process(self.proc)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} :{self.port}\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class Stack:
    """A generator and a streamer; ``base`` is the streamer's URL."""

    directory: Path
    streamer_env: dict[str, str] = field(default_factory=dict)
    generator: Service | None = None
    streamer: Service | None = None

    @property
    def base(self) -> str:
        assert self.streamer is not None
        return f"http://127.0.0.1:{self.streamer.port}"

    async def start(self) -> None:
        gport, sport = free_port(), free_port()
        self.generator = Service(
            "generator",
            gport,
            {
                "GENERATOR_PORT": str(gport),
                "GENERATOR_FREQUENCY": f"{TICK_MS}ms",
                "GENERATOR_RETENTION": "2m",
                "GENERATOR_METRICS_PORT": "0",
                "GENERATOR_GRACE_PERIOD": "1s",
                "GENERATOR_KEEPALIVE_MIN_CLIENT_INTERVAL": "1s",
                "PULSESTREAM_SETTINGS_FILE": "",
                "LOG_LEVEL": "info",
            },
            self.directory / "generator.log",
        )
        self.streamer = Service(
            "streamer",
            sport,
            {
                "STREAMER_PORT": str(sport),
                "STREAMER_GENERATOR_ADDRESS": f"127.0.0.1:{gport}",
                "STREAMER_API_KEYS": API_KEY,
                "STREAMER_RECONNECT_BASE": "50ms",
                "STREAMER_RECONNECT_CAP": "300ms",
                "STREAMER_KEEPALIVE_TIME": "1s",
                "STREAMER_KEEPALIVE_TIMEOUT": "1s",
                "STREAMER_CONNECT_TIMEOUT": "1s",
                "STREAMER_SSE_RETRY": "300ms",
                "STREAMER_SHUTDOWN_RETRY": "100ms",
                "STREAMER_GRACEFUL_SHUTDOWN": "2s",
                "STREAMER_SWEEP_INTERVAL": "200ms",
                "STREAMER_RATE_LIMIT_REQUESTS_PER_SECOND": "1000",
                "STREAMER_RATE_LIMIT_BURST": "1000",
                "STREAMER_MAX_STREAMS_PER_CLIENT": "100",
                "PULSESTREAM_SETTINGS_FILE": "",
                "LOG_LEVEL": "info",
                **self.streamer_env,
            },
            self.directory / "streamer.log",
        )
        await self.start_generator()
        await self.start_streamer()

    async def start_generator(self) -> None:
        assert self.generator is not None
        self.generator.start()
        port = self.generator.port
        await wait_until(lambda: port_open(port), 30, "the generator's port")

    async def start_streamer(self) -> None:
        assert self.streamer is not None
        self.streamer.start()

        async def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient(timeout=2) as client:
                    reply = await client.get(self.base + "/health")
                    return reply.status_code == 200 and reply.json()["upstream"] == "ready"
            return False

        await wait_until(healthy, 30, "the streamer's /health")

    def stop(self) -> None:
        for service in (self.streamer, self.generator):
            if service is not None and service.proc is not None and service.proc.poll() is None:
                service.terminate()

    def logs(self) -> str:
        return "\n".join(s.tail() for s in (self.streamer, self.generator) if s is not None)


@contextlib.contextmanager
def running(directory: Path, **streamer_env: str) -> Iterator[Stack]:
    """The stack for one test (start it with ``await stack.start()``); stopped, streamer first, at the end."""
    stack = Stack(directory, dict(streamer_env))
    try:
        yield stack
    finally:
        stack.stop()


def steps(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive pairs not exactly one tick apart: gaps and duplicates (empty = contiguous)."""
    return [(a, b) for a, b in itertools.pairwise(seqs) if b - a != TICK_MS]


def now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000
