"""``make run`` (``pulsestream-run``): both services up, both stopped together, and the reason when one dies.

Runs the real console script with its real children on free loopback ports. When a service exits
on its own, the run names it, says how it ended and shows its last lines (issue 18, item 4: it used
to end with only ``make: *** Error 247``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from loopback import free_port, port_open, wait_for
from processes import stop_process

BIN = Path(sys.executable).parent


def _start(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], Path, dict[str, str]]:
    ports = {
        "GENERATOR_PORT": str(free_port()),
        "STREAMER_PORT": str(free_port()),
        "GENERATOR_METRICS_PORT": str(free_port()),
    }
    full = {**os.environ, **ports, "GENERATOR_RETENTION": "30s", **env}
    out = tmp_path / "run.log"
    handle = out.open("wb")
    proc = subprocess.Popen([str(BIN / "pulsestream-run")], env=full, stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    return proc, out, ports


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _generator_pid(run_pid: int) -> int:
    for child in _children(run_pid):
        if "pulsestream-generator" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"):
            return child
    raise AssertionError("no generator child")


def test_both_services_come_up_and_stop_together_on_sigterm(tmp_path: Path) -> None:
    proc, out, ports = _start(tmp_path)
    try:
        wait_for(lambda: "pulsestream is running" in out.read_text(), 60, "the banner")
        text = out.read_text()
        assert f"http://127.0.0.1:{ports['STREAMER_PORT']}/" in text
        assert port_open(int(ports["GENERATOR_PORT"])) and port_open(int(ports["STREAMER_PORT"]))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
    finally:
        stop_process(proc)
    assert not port_open(int(ports["GENERATOR_PORT"])) and not port_open(int(ports["STREAMER_PORT"]))


def test_a_generator_that_cannot_start_is_named_with_its_status_and_last_lines(tmp_path: Path) -> None:
    proc, out, _ = _start(tmp_path, GENERATOR_FREQUENCY="often")
    try:
        code = proc.wait(60)
    finally:
        stop_process(proc)
    text = out.read_text()
    assert code == 2, text
    assert "pulsestream-run: the generator exited with status 2; its last lines:" in text
    assert "GENERATOR_FREQUENCY='often' is invalid" in text.split("its last lines:", 1)[1]
    assert "pulsestream is running" not in text


def test_a_generator_killed_while_running_is_reported_and_the_streamer_stopped(tmp_path: Path) -> None:
    proc, out, ports = _start(tmp_path)
    try:
        wait_for(lambda: "pulsestream is running" in out.read_text(), 60, "the banner")
        os.kill(_generator_pid(proc.pid), signal.SIGKILL)
        code = proc.wait(40)
    finally:
        stop_process(proc)
    text = out.read_text()
    assert code == 128 + signal.SIGKILL, text
    assert "the generator was killed by signal 9 (SIGKILL); its last lines:" in text
    assert "generator serving" in text.split("its last lines:", 1)[1]
    assert not port_open(int(ports["STREAMER_PORT"])), "the streamer is stopped too"
