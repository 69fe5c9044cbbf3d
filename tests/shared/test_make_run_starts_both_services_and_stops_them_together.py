"""``make run`` (``pulsestream-run``): generator and streamer side by side, stopped together.

``pulsestream/localrun.py`` is product code and starts the services its own way; these tests run it as a
user does, from its console script through the tests' harness, and look at what it started.
"""

from __future__ import annotations

import signal

import httpx
import pytest
from loopback import free_port, port_open
from services import Service, Stack, clean_environment, console_script, grpc_serving, http_answers, run_to_exit

pytestmark = pytest.mark.e2e


def _ports_env() -> dict[str, str]:
    return {
        "GENERATOR_PORT": str(free_port()),
        "GENERATOR_METRICS_PORT": "0",  # not the default 9464, which something else on this machine may hold
        "STREAMER_PORT": str(free_port()),
        "LOG_LEVEL": "info",
    }


def test_make_run_serves_the_dashboard_from_both_services_and_stops_both_on_sigterm(stack: Stack) -> None:
    env = _ports_env()
    generator_port, streamer_port = int(env["GENERATOR_PORT"]), int(env["STREAMER_PORT"])
    url = f"http://127.0.0.1:{streamer_port}"
    log = stack.directory / "run.log"
    run = Service(
        "run",
        [console_script("pulsestream-run")],
        clean_environment() | env,
        port=streamer_port,
        log=log,
        # Ready when it says so: it prints the URLs once both services accept connections.
        ready=lambda: "pulsestream is running" in log.read_text(),
    )
    stack.add(run)
    assert http_answers(url + "/health")(), "the streamer it started answers"
    assert grpc_serving(generator_port)(), "the generator it started is SERVING"
    listed = httpx.get(url + "/v1/series", timeout=10)
    assert listed.status_code == 200
    assert [entry["name"] for entry in listed.json()] == ["cpu", "memory", "requests", "latency"]
    assert httpx.get(url + "/", timeout=10).headers["content-type"].startswith("text/html")
    log = run.log_text()
    assert f"dashboard:  {url}/" in log
    assert "generator| " in log and "streamer | " in log, "both services' lines, each prefixed with its name"

    run.signal(signal.SIGTERM)
    assert run.wait_exit(30) == 0
    assert not port_open(streamer_port) and not port_open(generator_port), "both services stopped with it"


def test_make_run_stops_with_an_error_when_a_service_cannot_start() -> None:
    done = run_to_exit("pulsestream-run", _ports_env() | {"GENERATOR_FREQUENCY": "fast"}, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pulsestream-run: exited with code 2 before listening" in done.stderr
    assert "GENERATOR_FREQUENCY='fast' is invalid" in done.stdout  # the generator's own line, passed through
