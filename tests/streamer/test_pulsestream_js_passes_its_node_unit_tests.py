"""pulsestream.js's own unit tests (``tests/streamer/node/*.test.mjs``), run with ``node --test`` (Node 20).

They need no npm package: the module is imported from the repository, and a scripted EventSource and
fetch stand in for the streamer. Off CI a machine without ``node`` skips; under ``CI=true`` it fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tools import node

TESTS = Path(__file__).parent / "node"


def test_the_module_s_merge_trim_resume_and_backoff_logic_passes_node_s_test_runner() -> None:
    runner = node()
    files = sorted(str(path) for path in TESTS.glob("*.test.mjs"))
    assert files, "no node tests found"
    result = subprocess.run(
        [runner, "--test", "--test-reporter=tap", *files], capture_output=True, text=True, timeout=120, check=False
    )
    summary = [line for line in result.stdout.splitlines() if line.startswith(("# pass", "# fail", "not ok"))]
    assert result.returncode == 0, "\n".join([*summary, result.stdout[-4000:], result.stderr[-2000:]])
    assert "# fail 0" in result.stdout, summary
