"""Real generator and streamer processes for the end-to-end security and live-settings tests.

Each service runs from its console script on a free loopback port, configured only by environment variables,
with its stderr written to a file the tests scan (for keys that must never appear). Start-up waits on
conditions (the gRPC port accepts, ``/health`` answers), never on fixed sleeps.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from loopback import free_port, wait_for
from processes import stop_process

from pulsestream.spec import load_spec

BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0


@dataclass
class Service:
    """A running service process: its port, its log file, its settings file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    env: dict[str, str]
    settings_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def write_settings(self, document: dict[str, Any]) -> None:
        """Replace the live settings file atomically, as kubelet and editors do."""
        assert self.settings_path is not None
        tmp = self.settings_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(document), encoding="utf-8")
        os.replace(tmp, self.settings_path)

    def stop(self) -> None:
        stop_process(self.proc)


def _spawn(name: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    with log_path.open("wb") as log:
        return subprocess.Popen([str(BIN / f"pulsestream-{name}")], env=full, stdout=log, stderr=subprocess.STDOUT)


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class Launcher:
    """Starts services for one test module and stops them all at its end (streamers first)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.services: list[Service] = []

    def generator(
        self, settings: dict[str, Any] | None = None, settings_path: Path | None = None, **env: str
    ) -> Service:
        """Start a generator; its settings file is ``settings_path`` as prepared, else a new one with ``settings``."""
        port = free_port()
        if settings_path is None:
            settings_path = self.directory / f"generator-{port}.yaml"
            settings_path.write_text(yaml.safe_dump(settings or {}), encoding="utf-8")
        full = {
            "GENERATOR_PORT": str(port),
            "GENERATOR_METRICS_PORT": "0",
            "PULSESTREAM_SETTINGS_FILE": str(settings_path),
            "GENERATOR_SETTINGS_POLL_INTERVAL": "100ms",
            "LOG_LEVEL": "info",
            **env,
        }
        log_path = self.directory / f"generator-{port}.log"
        service = Service("generator", _spawn("generator", full, log_path), port, log_path, full, settings_path)
        self.services.append(service)
        wait_for(lambda: _port_open(port) or _dead(service), START_TIMEOUT, f"generator on :{port}")
        assert service.alive(), service.logs()
        return service

    def streamer(self, generator: Service, settings: dict[str, Any] | None = None, **env: str) -> Service:
        port = free_port()
        settings_path = self.directory / f"streamer-{port}.yaml"
        settings_path.write_text(yaml.safe_dump(settings or {}), encoding="utf-8")
        full = {
            "STREAMER_PORT": str(port),
            "STREAMER_GENERATOR_ADDRESS": f"127.0.0.1:{generator.port}",
            "PULSESTREAM_SETTINGS_FILE": str(settings_path),
            "STREAMER_SETTINGS_POLL_INTERVAL": "100ms",
            "LOG_LEVEL": "info",
            **env,
        }
        log_path = self.directory / f"streamer-{port}.log"
        service = Service("streamer", _spawn("streamer", full, log_path), port, log_path, full, settings_path)
        self.services.append(service)
        wait_for(lambda: _health(service) is not None or _dead(service), START_TIMEOUT, f"streamer on :{port}")
        assert service.alive(), service.logs()
        return service

    def stop_all(self) -> None:
        for service in sorted(self.services, key=lambda s: s.name != "streamer"):
            service.stop()


def _dead(service: Service) -> bool:
    return service.proc.poll() is not None


def _health(service: Service, headers: dict[str, str] | None = None) -> dict[str, Any] | None:
    try:
        response = httpx.get(service.url + "/health", headers=headers, timeout=2.0)
    except httpx.HTTPError:
        return None
    if response.status_code >= 500 and response.status_code != 503:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def health(service: Service, headers: dict[str, str] | None = None) -> dict[str, Any]:
    body = _health(service, headers)
    assert body is not None, f"no /health from {service.url}"
    return body


def expected_version(service: Service, document: dict[str, Any]) -> str:
    """The config version the streamer reports once ``document`` is in force over its environment's base."""
    from pulsestream_streamer.settings import StreamerSettings

    base = StreamerSettings.from_env(service.env).base_spec()
    return load_spec(yaml.safe_dump(document), base=base).version()
