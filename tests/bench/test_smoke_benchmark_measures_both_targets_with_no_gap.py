"""A tiny run of the real benchmark (``python -m bench --smoke``), so it cannot rot.

It starts the real generator, the real streamer and the reference bridge on
free loopback ports, opens three SSE clients to each target for two seconds,
and checks that the numbers it reports are sane: points were delivered with
no gap and no duplicate, latencies and CPU cost were measured, and the
ratios were computed.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_the_smoke_benchmark_measures_both_targets_with_no_gap(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out), "--logs", str(tmp_path / "logs")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pulsestream / reference:" in proc.stdout, proc.stdout

    document = json.loads(out.read_text())
    (scenario,) = document["scenarios"]
    rows = {row["target"]: row for row in scenario["results"]}
    assert set(rows) == {"pulsestream", "reference"}
    for target, row in rows.items():
        context = f"{target}: {row}"
        assert row["errors"] == [], context
        assert row["connections"] == 3, context
        assert row["points"] > 0, context
        assert row["gaps"] == 0, context
        assert row["missing"] == 0, context
        assert row["duplicates"] == 0, context
        assert row["closed_early"] == 0, context
        assert row["drops"] == 0, context
        # 3 clients x 50 points/s x 2 s is 300 points; allow for a slow, shared machine (and for a
        # backlog that drains inside the window, which can deliver a little more than was produced).
        assert 50 <= row["delivered_pct"] <= 110, context
        assert 0 <= row["p50"] <= row["p99"] <= row["max"] < 10_000, context
        assert row["cpu_per_100k_points"] is not None, context
        assert row["cpu_per_100k_points"] >= 0, context
    # pulsestream opens each stream with one snapshot; the reference has none.
    assert rows["pulsestream"]["snapshot_events"] == 3
    assert scenario["ratios"]["points_per_s"] is not None
