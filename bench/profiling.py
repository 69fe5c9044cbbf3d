"""Sample a target with py-spy during the measurement window and summarise where its time goes.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``);
:func:`summarise` turns them into the functions with the most samples on top
of the stack (self time) and anywhere in it (inclusive), which is what the
report and the README's findings quote. A flame graph is written next to it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, else on PATH; None when absent."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path, fmt: str = "raw") -> subprocess.Popen[bytes] | None:
    """Start sampling ``pid`` (and its subprocesses) for ``seconds``; None when py-spy is not installed."""
    executable = py_spy()
    if executable is None:
        return None
    argv = [executable, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "200"]
    argv += ["--subprocesses", "--nonblocking", "--format", fmt, "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def _frame_name(frame: str) -> str:
    # py-spy frames look like "function (path/to/module.py:123)"; drop the line number so samples add up.
    name, _, where = frame.partition(" (")
    module = where.rsplit(":", 1)[0].rstrip(")")
    for marker in ("site-packages/", "/streamer/", "/generator/", "/bench/", "/lib/python3"):
        if marker in module:
            module = module.split(marker, 1)[1]
    return f"{name} ({module})" if module else name


def summarise(collapsed: str, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive shares (percent of samples) of the busiest functions in collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";") if not frame.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if total == 0:
        return {"self": [], "inclusive": []}
    return {
        "self": [(name, 100.0 * count / total) for name, count in own.most_common(top)],
        "inclusive": [(name, 100.0 * count / total) for name, count in inclusive.most_common(top)],
    }
