"""CPU time and memory of the processes under test, from ``/proc``: what the benchmark measures.

The services themselves are started with ``tests/support/services.py``, as in the tests. CPU time is
``utime + stime`` of the process and its descendants from ``/proc/<pid>/stat`` (clock ticks), memory is
the sum of ``VmRSS`` from ``/proc/<pid>/status``, so a service that forks workers is measured whole.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from the ``ppid`` fields in ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by ``pid`` and its descendants."""
    total = 0
    for each in descendants(pid):
        try:
            stat = Path(f"/proc/{each}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory (VmRSS) of ``pid`` and its descendants, in bytes."""
    total = 0
    for each in descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total
