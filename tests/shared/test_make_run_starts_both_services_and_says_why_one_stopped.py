"""``make run`` (``pulsestream-run``): both services up, both stopped together, and the reason when one dies.

Runs the real console script with its real children on free loopback ports. When a service exits
on its own, the run names it, says how it ended and shows its last lines (issue 18, item 4: it used
to end with only ``make: *** Error 247``).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from loopback import free_port, port_open
from services import Service, Stack, clean_environment, console_script

pytestmark = pytest.mark.e2e


def _start(stack: Stack, **env: str) -> tuple[Service, dict[str, str]]:
    """``pulsestream-run`` started (not waited for) on free ports; ready when it prints its URLs."""
    ports = {
        "GENERATOR_PORT": str(free_port()),
        "STREAMER_PORT": str(free_port()),
        "GENERATOR_METRICS_PORT": str(free_port()),
    }
    log = stack.directory / f"run-{len(stack.services)}.log"
    run = Service(
        "run",
        [console_script("pulsestream-run")],
        clean_environment() | ports | {"GENERATOR_RETENTION": "30s", **env},
        port=int(ports["STREAMER_PORT"]),
        log=log,
        # It prints the URLs once both services are ready (its own readiness checks).
        ready=lambda: "pulsestream is running" in log.read_text(),
    )
    return stack.add(run, start=False).start(), ports


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _generator_pid(run_pid: int) -> int:
    for child in _children(run_pid):
        if "pulsestream-generator" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"):
            return child
    raise AssertionError("no generator child")


def test_both_services_come_up_and_stop_together_on_sigterm(stack: Stack) -> None:
    run, ports = _start(stack)
    run.wait_ready()
    text = run.log_text()
    assert f"http://127.0.0.1:{ports['STREAMER_PORT']}/" in text
    assert port_open(int(ports["GENERATOR_PORT"])) and port_open(int(ports["STREAMER_PORT"]))
    run.signal(signal.SIGTERM)
    assert run.wait_exit(40) == 0
    assert not port_open(int(ports["GENERATOR_PORT"])) and not port_open(int(ports["STREAMER_PORT"]))


def test_a_generator_that_cannot_start_is_named_with_its_status_and_last_lines(stack: Stack) -> None:
    run, _ = _start(stack, GENERATOR_FREQUENCY="often")
    code = run.wait_exit(60)
    text = run.log_text()
    assert code == 2, text
    assert "pulsestream-run: the generator exited with status 2; its last lines:" in text
    assert "GENERATOR_FREQUENCY='often' is invalid" in text.split("its last lines:", 1)[1]
    assert "pulsestream is running" not in text


@pytest.mark.fault
def test_a_generator_killed_while_running_is_reported_and_the_streamer_stopped(stack: Stack) -> None:
    run, ports = _start(stack)
    run.wait_ready()
    os.kill(_generator_pid(run.pid), signal.SIGKILL)
    code = run.wait_exit(40)
    text = run.log_text()
    assert code == 128 + signal.SIGKILL, text
    assert "the generator was killed by signal 9 (SIGKILL); its last lines:" in text
    assert "generator serving" in text.split("its last lines:", 1)[1]
    assert not port_open(int(ports["STREAMER_PORT"])), "the streamer is stopped too"
