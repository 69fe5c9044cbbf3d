"""The one way a test, or the benchmark, starts a service: its console script, an environment, loopback ports.

On pytest's ``pythonpath`` (and the benchmark's, see ``bench/__init__.py``): ``from services import Stack``.

- :class:`Generator`, :class:`StreamerProcess`, :class:`Operator`: one process each, from its console script
  (``pulsestream-generator``, ``-streamer``, ``-operator``), configured only by environment variables, on free
  loopback ports. Nothing of the caller's environment that a service reads gets through (:func:`clean_environment`);
  the defaults (each kind's short test timings, ``TEST_ENV``, or the benchmark's own) come first, the test's own
  variables last. stderr (the logs) goes to a file, stdout to that file or another: never a pipe nobody reads, which
  stalls a service once the pipe's buffer fills. A service is ready when its health says so (generator:
  ``grpc.health.v1`` Check ``SERVING``; streamer: ``GET /health`` answers; operator: kopf's liveness ``GET
  /healthz``). One that dies or never gets ready raises :class:`ServiceError` with the end of its log;
  :meth:`~Service.wait_health` waits for more than readiness (a streamer whose upstream is up).
  :meth:`~Service.stop` is SIGTERM, a grace period, SIGKILL; :meth:`~Service.kill` is SIGKILL; :meth:`~Service.start`
  after either starts it again on the same port, appending to the same log (``log_text(start=n)``: what
  the n-th start wrote).
- :class:`Stack`: the services of one test (or module), with their settings files, stopped together,
  streamers first; the ``stack`` and ``module_stack`` fixtures (``tests/conftest.py``) hand one out.
- :func:`run_streamer` / :class:`Streamer`: the real streamer app under the real uvicorn server in the
  test's own event loop, for tests that look at its hub and registry.
- :func:`parse_metrics` / :class:`Metrics`: the one reading of Prometheus text (``prometheus_client``'s
  parser); :meth:`Service.metric` and :meth:`Streamer.metric` read one sample with it.
- :func:`run_to_exit`: a service that should refuse to start (a bad setting), run to its end, output kept.

Sync and async: a call that waits (readiness, exit, stop, health, metrics) blocks the calling thread, which
is what sync tests, fixtures, threads and the benchmark want. An async test makes the same call through the
service's :attr:`~Service.aio` view (``await generator.aio.wait_ready()``, as ``grpc`` and ``grpc.aio``):
it runs in a worker thread, so the test's event loop keeps serving its SSE clients, kmock or an in-process
streamer meanwhile, and both forms behave the same. Calls that return at once (start, kill, signal, logs)
have one form. Every wait is on a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

import grpc
import httpx
import orjson
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loopback import free_port, port_open, wait_until
from processes import stop_process
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from pulsestream_streamer.http.server import StreamerServer
    from pulsestream_streamer.settings import StreamerSettings

__all__ = [
    "FREQUENCY_MS",
    "MINUTE_WINDOWS",
    "OPEN_LIMITS",
    "Generator",
    "Metrics",
    "Operator",
    "Service",
    "ServiceError",
    "Stack",
    "Streamer",
    "StreamerProcess",
    "clean_environment",
    "console_script",
    "grpc_serving",
    "http_answers",
    "http_ok",
    "parse_metrics",
    "run_streamer",
    "run_to_exit",
]

BIN = Path(sys.executable).parent
#: The test generators' period: consecutive sequences of a raw series differ by exactly this.
FREQUENCY_MS = 50
#: Start-up on a loaded 2-core machine (imports, the generator's history backfill) takes seconds, not this.
START_TIMEOUT = 60.0
#: Per-client limits lifted: every test client comes from 127.0.0.1 (the limits have tests of their own).
OPEN_LIMITS: dict[str, Any] = {
    "rateLimit": {"requestsPerSecond": 100000, "burst": 100000, "maxStreamsPerClient": 10000}
}
#: The streamer's own windows (10 minutes at most, 5 by default) in place of :class:`StreamerProcess`'s short
#: test ones, for tests whose pages or clients ask for minutes (``window=1m``), as the dashboard offers.
MINUTE_WINDOWS: dict[str, str] = {"STREAMER_MAX_WINDOW": "10m", "STREAMER_DEFAULT_WINDOW": "5m"}
#: What a service reads from its environment, besides the basics (PATH, HOME, locale, TMPDIR).
_SERVICE_VARIABLES = ("GENERATOR_", "STREAMER_", "OPERATOR_", "PULSESTREAM_", "OTEL_", "LOG_", "KUBECONFIG")
_POLL = 0.05
S = TypeVar("S", bound="Service")


class ServiceError(RuntimeError):
    """A service did not start, did not get ready, or died; the message ends with the end of its log."""


def clean_environment() -> dict[str, str]:
    """This process's environment without anything a service reads as a setting.

    A developer's shell with ``STREAMER_PORT``, ``OTEL_SDK_DISABLED`` or ``KUBECONFIG`` set must not change
    what a test starts; PATH, HOME, the locale and the temporary directory still get through.
    """
    return {key: value for key, value in os.environ.items() if not key.startswith(_SERVICE_VARIABLES)}


def console_script(name: str) -> str:
    """The console script installed next to the Python running the tests (the project's venv)."""
    path = BIN / name
    if not path.exists():
        raise ServiceError(f"{name} is not installed next to {sys.executable} (make dev installs it)")
    return str(path)


def run_to_exit(
    command: str | Sequence[str], env: Mapping[str, str], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run a service that should refuse to start (a bad setting exits 2 before it serves): status and output.

    ``command`` is a console script's name, or a whole argv. It never serves, so it gets no port, log file
    or readiness wait; ``subprocess.run`` reads both pipes to the end, so neither can fill.
    """
    argv = [console_script(command)] if isinstance(command, str) else list(command)
    return subprocess.run(
        argv, env={**clean_environment(), **env}, capture_output=True, text=True, timeout=timeout, check=False
    )


# --- metrics ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """One scrape of a ``/metrics`` endpoint, by family name as ``prometheus_client``'s parser reports it.

    A counter ``x_total`` is the family ``x``; a family declared but not yet used (a labelled one nobody
    incremented) is there, with no samples.
    """

    families: dict[str, Metric]

    @property
    def samples(self) -> list[Any]:
        return [sample for family in self.families.values() for sample in family.samples]

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """The first sample called ``name`` whose labels include ``labels``; 0 when there is none."""
        for sample in self.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(sample.value)
        return 0.0

    def total(self, name: str) -> float:
        """The sum of the samples called ``name`` over all their label sets."""
        return float(sum(sample.value for sample in self.samples if sample.name == name))


def parse_metrics(text: str) -> Metrics:
    """Prometheus text exposition, parsed (a malformed exposition raises: a test fails on it)."""
    return Metrics({family.name: family for family in text_string_to_metric_families(text)})


# --- readiness probes: sync callables, True once ready; an exception means "not yet" -----------------


def grpc_serving(port: int, root_certificates: Path | None = None) -> Callable[[], bool]:
    """``grpc.health.v1.Health/Check`` for the whole server (``""``) says SERVING (over TLS with this CA)."""

    def check() -> bool:
        if not port_open(port):
            return False
        target = f"127.0.0.1:{port}"
        if root_certificates is None:
            channel = grpc.insecure_channel(target)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates.read_bytes())
            channel = grpc.secure_channel(target, credentials)
        with channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return check


def http_answers(url: str) -> Callable[[], bool]:
    """``GET url`` answers with a JSON object and a status below 500.

    The streamer's ``/health`` is 200 even while its upstream is down (the body says ``degraded``), and 401
    when it is guarded by API keys: either way the process serves. 503 means draining: not ready.
    """

    def check() -> bool:
        response = httpx.get(url, timeout=2.0)
        return response.status_code < 500 and isinstance(response.json(), dict)

    return check


def http_ok(url: str) -> Callable[[], bool]:
    """``GET url`` answers 200."""
    return lambda: httpx.get(url, timeout=2.0).status_code == 200


#: What a probe raises while a service is still starting: refused, reset, half an answer, UNAVAILABLE.
_NOT_YET = (OSError, ValueError, httpx.HTTPError, grpc.RpcError)


# --- one process ------------------------------------------------------------------------------------


class Service:
    """One service process on a fixed loopback port: started, probed, read, stopped, and started again."""

    #: The environment a test service starts with before the test's own variables (see each kind).
    TEST_ENV: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        port: int,
        log: Path,
        ready: Callable[[], bool],
        stdout: Path | None = None,
        cwd: Path | None = None,
        settings_path: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        #: The whole environment of the next start; a test may change it before starting again.
        self.env = dict(env)
        self.port = port
        self.log = log
        self.stdout = stdout
        self.cwd = cwd
        self.settings_path = settings_path
        self._ready = ready
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @staticmethod
    def environment(
        defaults: Mapping[str, str], own: Mapping[str, str], settings: Path | None, env: Mapping[str, str] | None
    ) -> dict[str, str]:
        """The layers, last wins: the clean environment, the defaults, ports, the settings file, the test's."""
        layers = {**clean_environment(), **defaults, **own}
        if settings is not None:
            layers["PULSESTREAM_SETTINGS_FILE"] = str(settings)
        return {**layers, **(env or {})}

    def __repr__(self) -> str:
        return f"<{self.name} :{self.port} pid={self.proc.pid if self.proc else None}>"

    # --- addresses ----------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str | None:
        """Where its Prometheus metrics are, if it serves any."""
        return None

    # --- life ---------------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Self:
        """Spawn the process (on its port, appending to its log); :meth:`wait_ready` waits for it to serve."""
        if self.alive():
            raise ServiceError(f"{self.name} on :{self.port} is already running")
        self.starts += 1
        with contextlib.ExitStack() as files:
            log = files.enter_context(self.log.open("ab"))
            log.write(f"{_start_line(self.starts)}{' '.join(self.argv)} =====\n".encode())
            log.flush()
            out = files.enter_context(self.stdout.open("ab")) if self.stdout is not None else log
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=log
            )
        return self

    def check_alive(self) -> None:
        """:class:`ServiceError`, with the end of its log, unless it is running."""
        if not self.alive():
            raise ServiceError(f"{self.name} on :{self.port} exited with {self.returncode}:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> Self:
        """Until its health says it serves; :class:`ServiceError` if it exits first or time runs out."""
        self._wait(self._ready, timeout, "not ready")
        return self

    def wait_health(
        self, condition: Callable[[dict[str, Any]], bool] | None = None, timeout: float = START_TIMEOUT
    ) -> dict[str, Any]:
        """Until its ``GET /health`` body satisfies ``condition``; that body. An HTTP service.

        By default until ``status`` is ``ok``: a streamer that serves *and* has its upstream (readiness is
        only the first), which is where a test whose clients must not see a start-up outage begins.
        :class:`ServiceError` if it exits first or time runs out.
        """
        wanted = condition or (lambda body: body.get("status") == "ok")

        def probe() -> dict[str, Any] | None:
            body = self.health()
            return body if wanted(body) else None

        body: dict[str, Any] = self._wait(probe, timeout, "/health never as wanted")
        return body

    def _wait(self, probe: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``probe`` until it returns something truthy (an exception of :data:`_NOT_YET` is "not yet")."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            with contextlib.suppress(*_NOT_YET):
                result = probe()
                if result:
                    return result
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name} on :{self.port} {what} after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(_POLL)

    def __enter__(self) -> Self:
        try:
            return self.start().wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_: object) -> None:
        self.stop()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None, f"{self.name} was never started"
        self.proc.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP: the process freezes with every connection left open."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive():
            self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; the kernel closes its sockets."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)  # a frozen process must be able to die
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM, up to ``grace`` seconds to drain and exit, then SIGKILL (what Kubernetes does)."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            stop_process(self.proc, grace)

    def wait_exit(self, timeout: float) -> int:
        """Its exit status (negative: the signal that ended it), once it exits by itself."""
        assert self.proc is not None, f"{self.name} was never started"
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ServiceError(f"{self.name} still running after {timeout:.0f}s:\n{self.log_tail()}") from None

    # --- what it wrote ------------------------------------------------------------------------------

    def log_text(self, start: int | None = None) -> str:
        """Its log (stderr, and stdout unless that has a file of its own) over every start.

        With ``start``, only what that start wrote (1 is the first; :attr:`starts` the latest): after a
        restart, what the new process said (``"recovered from the journal"``), not the one before it.
        """
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        if start is None:
            return text
        begin = text.find(_start_line(start))
        if begin < 0:
            return ""
        end = text.find(_start_line(start + 1), begin)
        return text[begin : end if end >= 0 else len(text)]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(empty log)"

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON lines of its log (``LOG_FORMAT=json``)."""
        return _json_lines(self.log)

    def stdout_records(self) -> list[dict[str, Any]]:
        """The JSON lines of its stdout: spans, with ``OTEL_TRACES_EXPORTER=console``."""
        return _json_lines(self.stdout or self.log)

    def write_settings(self, document: Mapping[str, Any] | str) -> None:
        """Replace its live settings file atomically (write aside, rename), as kubelet and editors do."""
        assert self.settings_path is not None, f"{self.name} has no settings file"
        text = document if isinstance(document, str) else yaml.safe_dump(dict(document))
        aside = self.settings_path.with_name(self.settings_path.name + ".tmp")
        aside.write_text(text, encoding="utf-8")
        os.replace(aside, self.settings_path)

    # --- what it answers ----------------------------------------------------------------------------

    def health(self, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Its ``GET /health`` body, whatever the status (an HTTP service)."""
        response = httpx.get(self.url + "/health", headers=dict(headers or {}), timeout=10.0)
        body = response.json()
        assert isinstance(body, dict), f"{self.name} /health answered {response.status_code} {response.text[:200]}"
        return body

    def metrics(self) -> Metrics:
        """One scrape of its ``/metrics``."""
        url = self.metrics_url
        assert url is not None, f"{self.name} on :{self.port} serves no metrics"
        response = httpx.get(url, timeout=10.0)
        assert response.status_code == 200, f"{url} answered {response.status_code}: {response.text[:200]}"
        return parse_metrics(response.text)

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """One sample of its ``/metrics`` (0 when absent); see :meth:`Metrics.value`."""
        return self.metrics().value(name, labels)

    # --- what the kernel says -----------------------------------------------------------------------

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

    @property
    def aio(self) -> AsyncService:
        """The waiting calls, awaitable (each runs in a worker thread)."""
        return AsyncService(self)


class AsyncService:
    """A :class:`Service`'s waiting calls for async tests: the same calls, run off the event loop."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def wait_ready(self, timeout: float = START_TIMEOUT) -> Service:
        return await asyncio.to_thread(self.service.wait_ready, timeout)

    async def wait_health(
        self, condition: Callable[[dict[str, Any]], bool] | None = None, timeout: float = START_TIMEOUT
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self.service.wait_health, condition, timeout)

    async def wait_exit(self, timeout: float) -> int:
        return await asyncio.to_thread(self.service.wait_exit, timeout)

    async def stop(self, grace: float = 20.0) -> None:
        await asyncio.to_thread(self.service.stop, grace)

    async def health(self, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.service.health, headers)

    async def metrics(self) -> Metrics:
        return await asyncio.to_thread(self.service.metrics)

    async def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        return await asyncio.to_thread(self.service.metric, name, labels)


def _start_line(start: int) -> str:
    """How the log marks where a start's output begins (followed by the command line)."""
    return f"===== start {start}: "


def _json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().splitlines():
        if line.startswith(b"{"):
            with contextlib.suppress(orjson.JSONDecodeError):  # a line still being written
                records.append(orjson.loads(line))
    return records


# --- the three services -----------------------------------------------------------------------------


class Generator(Service):
    """``pulsestream-generator`` on ``127.0.0.1:port``, metrics on a port of their own; ready when SERVING."""

    TEST_ENV: ClassVar[Mapping[str, str]] = {
        "GENERATOR_FREQUENCY": f"{FREQUENCY_MS}ms",
        "GENERATOR_RETENTION": "1m",  # a short history: the start-up backfill is cheap
        "GENERATOR_SEED": "42",  # replicas give identical points, so failing over costs no point
        "GENERATOR_GRACE_PERIOD": "3s",  # drains, and test teardowns, in seconds
        # The test streamers ping every second; the generator must not answer that with too_many_pings.
        "GENERATOR_KEEPALIVE_MIN_CLIENT_INTERVAL": "1s",
        "GENERATOR_SETTINGS_POLL_INTERVAL": "100ms",  # a settings file change is seen at once
        "LOG_LEVEL": "info",
    }

    def __init__(
        self,
        port: int,
        log: Path,
        env: Mapping[str, str] | None = None,
        *,
        settings: Path | None = None,
        tls_ca: Path | None = None,
        defaults: Mapping[str, str] | None = None,
        stdout: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        """``tls_ca``: the CA to check its certificate with, when ``GENERATOR_TLS_*`` make it serve TLS."""
        own = {"GENERATOR_PORT": str(port), "GENERATOR_METRICS_PORT": str(free_port())}
        full = self.environment(self.TEST_ENV if defaults is None else defaults, own, settings, env)
        super().__init__(
            "generator",
            [console_script("pulsestream-generator")],
            full,
            port=port,
            log=log,
            ready=grpc_serving(port, tls_ca),
            stdout=stdout,
            cwd=cwd,
            settings_path=settings,
        )

    @property
    def metrics_url(self) -> str | None:
        port = int(self.env.get("GENERATOR_METRICS_PORT") or 0)
        return f"http://127.0.0.1:{port}/metrics" if port else None

    def wait_serving(self, timeout: float = START_TIMEOUT) -> Self:
        """:meth:`wait_ready`, by the name the streamer tests' harness gave it (kept for branches that use it)."""
        return self.wait_ready(timeout)


class StreamerProcess(Service):
    """``pulsestream-streamer`` on ``http://127.0.0.1:port`` in front of ``upstream``; ready when /health answers.

    (:class:`Streamer` is the streamer in the test's own process.)
    """

    #: Short timeouts, keepalives, backoffs and drains, so faults play out in seconds; small windows, so
    #: snapshots stay cheap (a test that streams longer windows says so).
    TEST_ENV: ClassVar[Mapping[str, str]] = {
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
        "STREAMER_SETTINGS_POLL_INTERVAL": "100ms",
        "LOG_LEVEL": "info",
    }

    def __init__(
        self,
        port: int,
        log: Path,
        upstream: str | Service | Sequence[str | Service],
        env: Mapping[str, str] | None = None,
        *,
        settings: Path | None = None,
        defaults: Mapping[str, str] | None = None,
        argv: Sequence[str] | None = None,
        stdout: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        """``upstream``: the generator, or its replicas (a list), or their addresses; ``argv`` replaces the script."""
        replicas = [upstream] if isinstance(upstream, str | Service) else list(upstream)
        address = ",".join(r.address if isinstance(r, Service) else r for r in replicas)
        own = {"STREAMER_PORT": str(port), "STREAMER_GENERATOR_ADDRESS": address}
        full = self.environment(self.TEST_ENV if defaults is None else defaults, own, settings, env)
        super().__init__(
            "streamer",
            list(argv) if argv else [console_script("pulsestream-streamer")],
            full,
            port=port,
            log=log,
            ready=http_answers(f"http://127.0.0.1:{port}/health"),
            stdout=stdout,
            cwd=cwd,
            settings_path=settings,
        )

    @property
    def metrics_url(self) -> str | None:
        return self.url + "/metrics"

    def version_of(self, document: Mapping[str, Any]) -> str:
        """The ``config_version`` its /health reports once ``document`` is in force over its environment."""
        from pulsestream_streamer.settings import StreamerSettings

        from pulsestream.spec import load_spec

        base = StreamerSettings.from_env(self.env).base_spec()
        return load_spec(yaml.safe_dump(dict(document)), base=base).version()


class Operator(Service):
    """``pulsestream-operator`` with kopf's liveness endpoint on ``port``; ready when ``/healthz`` answers 200."""

    TEST_ENV: ClassVar[Mapping[str, str]] = {"LOG_LEVEL": "info"}

    def __init__(
        self,
        port: int,
        log: Path,
        env: Mapping[str, str] | None = None,
        *,
        defaults: Mapping[str, str] | None = None,
        stdout: Path | None = None,
    ) -> None:
        own = {"OPERATOR_LIVENESS_PORT": str(port)}
        full = self.environment(self.TEST_ENV if defaults is None else defaults, own, None, env)
        super().__init__(
            "operator",
            [console_script("pulsestream-operator")],
            full,
            port=port,
            log=log,
            ready=http_ok(f"http://127.0.0.1:{port}/healthz"),
            stdout=stdout,
        )


# --- several of them --------------------------------------------------------------------------------


class Stack:
    """The services of one test (or module): started on free ports with files in ``directory``, stopped together.

    Each service logs to ``<name>-<port>-<n>.log`` (stderr) and ``.out`` (stdout, where console spans go);
    its live settings file is ``<name>-<port>-<n>.yaml``. :meth:`stop_all` stops streamers first, so their
    clients hear ``server_shutdown`` before the generators drain.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.services: list[Service] = []
        self._serial = itertools.count(1)

    def _stem(self, name: str, port: int) -> Path:
        return self.directory / f"{name}-{port}-{next(self._serial)}"

    def _settings(self, stem: Path, document: Mapping[str, Any]) -> Path:
        path = stem.with_suffix(".yaml")
        path.write_text(yaml.safe_dump(dict(document)), encoding="utf-8")
        return path

    def add(self, service: S, start: bool = True) -> S:
        """Stop ``service`` with the others; start it and wait until it is ready unless ``start`` is False."""
        self.services.append(service)
        if start:
            service.start().wait_ready()
        return service

    def generator(
        self,
        settings: Mapping[str, Any] | None = None,
        *,
        port: int | None = None,
        settings_path: Path | None = None,
        tls_ca: Path | None = None,
        start: bool = True,
        **env: str,
    ) -> Generator:
        """A generator with ``settings`` as its live settings file (or the file at ``settings_path``)."""
        port = port or free_port()
        stem = self._stem("generator", port)
        path = settings_path or self._settings(stem, settings or {})
        generator = Generator(
            port, stem.with_suffix(".log"), env, settings=path, tls_ca=tls_ca, stdout=stem.with_suffix(".out")
        )
        return self.add(generator, start)

    def streamer(
        self,
        upstream: str | Service | Sequence[str | Service],
        settings: Mapping[str, Any] | None = None,
        *,
        port: int | None = None,
        settings_path: Path | None = None,
        start: bool = True,
        **env: str,
    ) -> StreamerProcess:
        """A streamer on ``upstream``; its settings file is :data:`OPEN_LIMITS` under ``settings``."""
        port = port or free_port()
        stem = self._stem("streamer", port)
        path = settings_path or self._settings(stem, {**OPEN_LIMITS, **(settings or {})})
        streamer = StreamerProcess(
            port, stem.with_suffix(".log"), upstream, env, settings=path, stdout=stem.with_suffix(".out")
        )
        return self.add(streamer, start)

    def operator(self, *, port: int | None = None, start: bool = True, **env: str) -> Operator:
        port = port or free_port()
        stem = self._stem("operator", port)
        return self.add(Operator(port, stem.with_suffix(".log"), env, stdout=stem.with_suffix(".out")), start)

    def stop_all(self, grace: float = 20.0) -> None:
        """Streamers, then the rest: each group told at once (SIGTERM), waited for together, SIGKILL after ``grace``.

        A group drains in parallel, as pods of a deployment do, so a test with several services does not
        pay their shutdowns one after another.
        """
        streamers = [s for s in self.services if s.name == "streamer"]
        for group in (streamers, [s for s in self.services if s.name != "streamer"]):
            running = [service for service in group if service.alive()]
            for service in running:
                service.signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
                service.signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for service in running:
                assert service.proc is not None
                try:
                    service.proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    service.kill()

    def report(self, chars: int = 4000) -> str:
        """The end of every service's log, for a failed test's output."""
        return "\n".join(f"----- {s.name} :{s.port} -----\n{s.log_text()[-chars:]}" for s in self.services)

    @property
    def aio(self) -> AsyncStack:
        """The same calls, awaitable (each runs in a worker thread)."""
        return AsyncStack(self)


class AsyncStack:
    """A :class:`Stack` for async tests: starting a service waits for it off the event loop."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    async def generator(self, settings: Mapping[str, Any] | None = None, **options: Any) -> Generator:
        return await asyncio.to_thread(lambda: self.stack.generator(settings, **options))

    async def streamer(
        self,
        upstream: str | Service | Sequence[str | Service],
        settings: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> StreamerProcess:
        return await asyncio.to_thread(lambda: self.stack.streamer(upstream, settings, **options))

    async def operator(self, **options: Any) -> Operator:
        return await asyncio.to_thread(lambda: self.stack.operator(**options))

    async def stop_all(self) -> None:
        await asyncio.to_thread(self.stack.stop_all)


# --- the streamer in the test's own process ---------------------------------------------------------


@dataclass
class Streamer:
    """An in-process streamer: its URL, settings, app state and server."""

    server: StreamerServer
    settings: StreamerSettings
    url: str

    @property
    def state(self) -> Any:
        return self.server.streamer_app.state

    async def metrics(self) -> Metrics:
        async with httpx.AsyncClient() as client:
            return parse_metrics((await client.get(self.url + "/metrics")).text)

    async def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample from /metrics (0 when absent); see :meth:`Metrics.value`."""
        return (await self.metrics()).value(name, labels)


@contextlib.asynccontextmanager
async def run_streamer(generator_address: str, **overrides: str) -> AsyncIterator[Streamer]:
    """The real streamer app under the real uvicorn server, on a free port, in this event loop.

    ``overrides`` are settings by field name (``flush_interval="400ms"``). Stopped as SIGTERM stops it:
    the hub drains first, then the server exits.
    """
    from pulsestream_streamer.http.server import build_server
    from pulsestream_streamer.settings import StreamerSettings

    # Generous per-client limits: every test client comes from 127.0.0.1 (the limits have their own tests).
    folder = tempfile.TemporaryDirectory(prefix="streamer-")
    live = Path(folder.name) / "settings.yaml"
    live.write_text("rateLimit: {requestsPerSecond: 10000, burst: 10000, maxStreamsPerClient: 10000}\n")
    env = {
        "PULSESTREAM_SETTINGS_FILE": str(live),
        "STREAMER_PORT": "0",
        "STREAMER_GENERATOR_ADDRESS": generator_address,
        "STREAMER_RECONNECT_BASE": "50ms",
        "STREAMER_RECONNECT_CAP": "300ms",
        "STREAMER_HUB_LINGER": "0ms",
        "STREAMER_GRACEFUL_SHUTDOWN": "2s",
        **{f"STREAMER_{key.upper()}": value for key, value in overrides.items()},
    }
    settings = StreamerSettings.from_env(env)
    server = build_server(settings)
    task = asyncio.create_task(server.serve(sockets=[server.bind()]))
    try:
        await wait_until(lambda: server.started or task.done(), what="streamer start")
        if task.done():
            task.result()
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Streamer(server, settings, f"http://127.0.0.1:{port}")
    finally:
        server.streamer_app.state.hub.drain()  # what SIGTERM does first
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        folder.cleanup()
