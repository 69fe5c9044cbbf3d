"""``make run``: generator and streamer side by side, stopped together, and saying why when one stops.

Starts ``pulsestream-generator``, waits until it reports SERVING on gRPC
health, starts ``pulsestream-streamer``, waits until its ``/health`` answers,
and prints the dashboard URL. Both services log to this process's output,
each line prefixed with the service name. Ctrl-C or SIGTERM sends SIGTERM to
both (streamer first, so browsers are told to reconnect before the generator
drains), waits for them to exit, and returns 0.

If a service exits on its own, or never becomes ready, the other is stopped
too and the run ends with one message naming the service, how it ended (its
exit status, or the signal that killed it) and its last log lines, so the
reason is on screen rather than ``make: *** Error 247``; the exit status is
passed on (128 + the signal number for a killed service, as shells report it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_STOP_TIMEOUT = 30.0
_READY_TIMEOUT = 60.0
#: Log lines of each service kept to explain an exit.
_TAIL_LINES = 12


class ServiceFailed(Exception):
    """A service exited or never became ready; ``str()`` says which and how."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Service:
    """One child process: its output pumped to ours with a prefix, and the last lines kept."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self.proc: asyncio.subprocess.Process | None = None
        self._pumped: asyncio.Task[None] | None = None

    async def start(self, env: Mapping[str, str], tasks: asyncio.TaskGroup) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            os.path.join(os.path.dirname(sys.executable), f"pulsestream-{self.name}"),
            env=dict(env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        self._pumped = tasks.create_task(self._pump(self.proc.stdout), name=f"pump-{self.name}")

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        prefix = f"{self.name:<9}| ".encode()
        while line := await stream.readline():
            self.tail.append(line.decode("utf-8", "replace").rstrip())
            sys.stdout.buffer.write(prefix + line)
            sys.stdout.flush()

    async def output_read(self, timeout: float = 2.0) -> None:
        """Wait until its output is read to the end (it exited: its last lines are then in :attr:`tail`)."""
        if self._pumped is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pumped), timeout)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def failure(self, what: str) -> ServiceFailed:
        """Why this service is not running: how it ended, and its last lines."""
        code = self.returncode
        if code is None:
            ended, status = what, 1
        elif code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            ended, status = f"was killed by signal {-code} ({name})", 128 - code
        else:
            ended, status = f"exited with status {code}", code or 1
        lines = "\n".join(f"    {line}" for line in self.tail) or "    (no output)"
        return ServiceFailed(f"the {self.name} {ended}; its last lines:\n{lines}", status)

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _generator_serving(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def _streamer_healthy(host: str, port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    try:
        writer.write(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readline(), 2)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return status.startswith(b"HTTP/1.1 200")


async def _wait_ready(service: Service, ready: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``ready`` until true; raise :class:`ServiceFailed` if the service ends first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _READY_TIMEOUT
    while loop.time() < deadline:
        if service.returncode is not None:
            await service.output_read()
            raise service.failure("stopped")
        if await ready():
            return
        await asyncio.sleep(0.1)
    raise service.failure(f"was not {what} within {_READY_TIMEOUT:.0f}s")


async def run(env: Mapping[str, str]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gen_port = int(env.get("GENERATOR_PORT", "50051"))
    http_port = int(env.get("STREAMER_PORT", "8080"))
    streamer_env = {"STREAMER_GENERATOR_ADDRESS": f"127.0.0.1:{gen_port}", **env}
    generator, streamer = Service("generator"), Service("streamer")
    code = 0
    async with asyncio.TaskGroup() as tasks:
        try:
            await generator.start(env, tasks)
            await _wait_ready(generator, lambda: _generator_serving(f"127.0.0.1:{gen_port}"), "serving")
            await streamer.start(streamer_env, tasks)
            await _wait_ready(streamer, lambda: _streamer_healthy("127.0.0.1", http_port), "healthy")
            print(
                f"\n  pulsestream is running\n"
                f"    dashboard:  http://127.0.0.1:{http_port}/\n"
                f"    SSE:        http://127.0.0.1:{http_port}/v1/stream?series=cpu,memory\n"
                f"    gRPC:       grpcurl -plaintext 127.0.0.1:{gen_port} list\n"
                f"  Ctrl-C stops both.\n",
                flush=True,
            )
            await _until_stopped(stop, generator, streamer)
        except ServiceFailed as failure:
            print(f"\npulsestream-run: {failure}", file=sys.stderr, flush=True)
            code = failure.code
        finally:
            await streamer.stop()
            await generator.stop()
    return code


async def _until_stopped(stop: asyncio.Event, *services: Service) -> None:
    """Return on Ctrl-C/SIGTERM; raise :class:`ServiceFailed` for the first service that exits on its own."""
    waits = {asyncio.ensure_future(service.proc.wait()): service for service in services if service.proc}
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([*waits, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in [*waits, stopper]:
            future.cancel()
    if stopper in done:
        return
    first = next(waits[future] for future in waits if future in done)
    await first.output_read()
    raise first.failure("stopped")


def main() -> None:
    sys.exit(asyncio.run(run(os.environ)))


if __name__ == "__main__":
    main()
