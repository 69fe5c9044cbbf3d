"""A real ``redis-server`` (Debian's package) on a free loopback port, started by the test that needs it.

Named ``redisserver`` (not ``redis``) so that, on pytest's ``pythonpath``, it never shadows the client
package. Without the binary a test is skipped on a laptop and fails under ``CI=true`` (``.ci/run``
installs ``redis-server``). The server runs in the test's directory with its own log; persistence is
off unless asked for (``appendonly=True`` keeps an append-only file there, for restart tests), and
``DEBUG`` is enabled for the slow-Redis tests (``DEBUG SLEEP``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from loopback import free_port, port_open
from processes import stop_process

__all__ = ["RedisServer", "redis_binary"]


def redis_binary() -> str:
    """Path of ``redis-server``; skip without it, or fail under CI (which installs it)."""
    path = shutil.which("redis-server")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but redis-server is missing (.ci/run installs it)")
    pytest.skip("needs redis-server (apt-get install redis-server)")


class RedisServer:
    """One ``redis-server`` process; ``url`` is what ``GENERATOR_HISTORY_URL`` takes."""

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = False,
        password: str | None = None,
        port: int = 0,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.password = password
        #: (certificate, key) of the server: it then listens with TLS only (rediss://).
        self.tls = tls
        self.port = port or free_port()
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            "0" if self.tls else str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--enable-debug-command",
            "yes",
            "--logfile",
            str(self.log),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            cert, key = self.tls
            args += ["--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
            args += ["--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start on {self.port}\n{self.tail()}")
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        if self.tls:
            return port_open(self.port)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown save; what the append-only file holds is what comes back."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc, grace=10)

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- redis ({self.log})\n" + "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
