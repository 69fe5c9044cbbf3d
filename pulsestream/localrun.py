"""``make run``: generator and streamer side by side, stopped together.

Starts ``pulsestream-generator``, waits until its port accepts connections,
starts ``pulsestream-streamer``, waits for its HTTP port, and prints the
dashboard URL. Both services log to this process's output, each line
prefixed with the service name. Ctrl-C or SIGTERM sends SIGTERM to both
(streamer first, so browsers are told to reconnect before the generator
drains), waits for them to exit, and returns; if either exits on its own,
the other is stopped too and the exit code is passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping

_STOP_TIMEOUT = 30.0


async def _pump(name: str, stream: asyncio.StreamReader) -> None:
    prefix = f"{name:<9}| ".encode()
    while line := await stream.readline():
        sys.stdout.buffer.write(prefix + line)
        sys.stdout.flush()


async def _wait_port(host: str, port: int, proc: asyncio.subprocess.Process, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before listening on {host}:{port}")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise RuntimeError(f"did not listen on {host}:{port} within {timeout:.0f}s")


async def _start(name: str, env: Mapping[str, str], tasks: asyncio.TaskGroup) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        os.path.join(os.path.dirname(sys.executable), f"pulsestream-{name}"),
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    tasks.create_task(_pump(name, proc.stdout), name=f"pump-{name}")
    return proc


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def run(env: Mapping[str, str]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gen_port = int(env.get("GENERATOR_PORT", "50051"))
    http_port = int(env.get("STREAMER_PORT", "8080"))
    streamer_env = {"STREAMER_GENERATOR_ADDRESS": f"127.0.0.1:{gen_port}", **env}
    procs: list[asyncio.subprocess.Process] = []
    code = 0
    async with asyncio.TaskGroup() as tasks:
        try:
            generator = await _start("generator", env, tasks)
            procs.append(generator)
            await _wait_port("127.0.0.1", gen_port, generator, 30)
            streamer = await _start("streamer", streamer_env, tasks)
            procs.append(streamer)
            await _wait_port("127.0.0.1", http_port, streamer, 30)
            print(
                f"\n  pulsestream is running\n"
                f"    dashboard:  http://127.0.0.1:{http_port}/\n"
                f"    SSE:        http://127.0.0.1:{http_port}/v1/stream?series=cpu,memory\n"
                f"    gRPC:       grpcurl -plaintext 127.0.0.1:{gen_port} list\n"
                f"  Ctrl-C stops both.\n",
                flush=True,
            )
            exited = [asyncio.ensure_future(p.wait()) for p in procs]
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait([*exited, stopper], return_when=asyncio.FIRST_COMPLETED)
            for fut in [*exited, stopper]:
                fut.cancel()
            if stopper not in done:
                code = next(p.returncode for p in procs if p.returncode is not None) or 1
        except RuntimeError as error:
            print(f"pulsestream-run: {error}", file=sys.stderr, flush=True)
            code = 1
        finally:
            for proc in reversed(procs):
                await _stop(proc)
    return code


def main() -> None:
    sys.exit(asyncio.run(run(os.environ)))


if __name__ == "__main__":
    main()
