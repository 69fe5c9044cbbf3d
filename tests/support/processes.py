"""Stopping the service processes tests start, the way Kubernetes does: SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import subprocess

__all__ = ["stop_process"]


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 20.0) -> None:
    """SIGTERM ``proc`` if it still runs, wait up to ``grace`` seconds, then SIGKILL it and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
