"""A real generator and streamer (console scripts, loopback ports) for the ingest end-to-end tests.

Kept small on purpose: each service is a process with an environment and a log file, started and
waited for by condition (gRPC health, ``/health``), killed or stopped by pid (``processes.stop_process``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loopback import free_port, wait_until
from processes import stop_process

BIN = Path(sys.executable).parent
#: Rate limits lifted: every test client comes from 127.0.0.1.
OPEN_LIMITS = {"rateLimit": {"requestsPerSecond": 100000, "burst": 100000, "maxStreamsPerClient": 10000}}


@dataclass
class Service:
    name: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **self.env}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([str(BIN / f"pulsestream-{self.name}")], env=full, stdout=out, stderr=out)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} ({self.log})\n" + "\n".join(text.splitlines()[-lines:])


@dataclass
class Stack:
    directory: Path
    generator_env: dict[str, str] = field(default_factory=dict)
    gport: int = field(default_factory=free_port)
    sport: int = field(default_factory=free_port)
    services: list[Service] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gport}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.sport}"

    async def start_generator(self, port: int | None = None) -> Service:
        """A generator on ``port`` (default: the stack's), with the stack's environment; waits until it serves."""
        port = port or self.gport
        address = f"127.0.0.1:{port}"
        env = {
            "GENERATOR_PORT": str(port),
            "GENERATOR_METRICS_PORT": "0",
            "GENERATOR_FREQUENCY": "100ms",
            "GENERATOR_RETENTION": "2m",
            "GENERATOR_GRACE_PERIOD": "1s",
            **self.generator_env,
        }
        service = Service("generator", env, self.directory / f"generator-{len(self.services)}.log")
        service.start()
        self.services.append(service)

        async def serving() -> bool:
            with contextlib.suppress(grpc.aio.AioRpcError):
                async with grpc.aio.insecure_channel(address) as channel:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
            return False

        await wait_until(serving, timeout=30, what=f"generator on {address}\n{service.tail()}")
        return service

    async def start_streamer(self, addresses: str | None = None) -> Service:
        """The streamer, following ``addresses`` (comma-separated replicas; default: the stack's generator)."""
        settings = self.directory / "streamer-settings.json"
        settings.write_text(json.dumps(OPEN_LIMITS))
        env = {
            "STREAMER_PORT": str(self.sport),
            "STREAMER_GENERATOR_ADDRESS": addresses or self.address,
            "STREAMER_RECONNECT_BASE": "50ms",
            "STREAMER_RECONNECT_CAP": "300ms",
            "PULSESTREAM_SETTINGS_FILE": str(settings),
        }
        service = Service("streamer", env, self.directory / "streamer.log")
        service.start()
        self.services.append(service)

        async def healthy() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(f"{self.base}/health")).status_code == 200
            return False

        await wait_until(healthy, timeout=30, what=f"streamer on {self.base}\n{service.tail()}")
        return service

    def logs(self) -> str:
        return "\n".join(service.tail() for service in self.services)

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


@contextlib.asynccontextmanager
async def running(directory: Path, **generator_env: str) -> AsyncIterator[Stack]:
    """A generator and a streamer, both stopped at the end."""
    stack = Stack(directory, dict(generator_env))
    try:
        await stack.start_generator()
        await stack.start_streamer()
        yield stack
    finally:
        await asyncio.to_thread(stack.stop)


class SseReader:
    """Reads one ``/v1/stream`` in the background and keeps every point per series (and the events' names)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.points: dict[str, list[dict[str, Any]]] = {}
        self.events: list[str] = []
        self.errors: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SseReader:
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _read(self) -> None:
        from httpx_sse import aconnect_sse

        last_id: str | None = None
        while True:  # reconnect as EventSource does, with Last-Event-ID
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                async with (
                    httpx.AsyncClient(timeout=None) as client,
                    aconnect_sse(client, "GET", self.url, headers=headers) as source,
                ):
                    async for event in source.aiter_sse():
                        if not event.data:
                            continue
                        self.events.append(event.event)
                        if event.event in ("snapshot", "points"):
                            body = json.loads(event.data)
                            for point in body["points"]:
                                self.points.setdefault(point["series"], []).append(point)
                        if event.id:
                            last_id = event.id
            except Exception as error:  # a refused stream (400) or a cut connection: noted, and retried
                self.errors.append(repr(error))
            await asyncio.sleep(0.2)

    def seqs(self, series: str) -> list[int]:
        return [int(point["seq"]) for point in self.points.get(series, [])]
