"""A tiny run of the ingest benchmark (``python -m bench --scenario ingest --smoke``), so it cannot rot.

Real generator, streamer and producer processes: a flood through the library and with pre-encoded
requests (points acknowledged, CPU measured), then three SSE clients on a published series next
to three on a synthetic one, every point delivered with no gap and no duplicate.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_the_ingest_smoke_benchmark_measures_throughput_and_publish_to_browser_latency(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--scenario", "ingest", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "published / synthetic:" in proc.stdout, proc.stdout
    throughput, latency = json.loads(out.read_text())["scenarios"]
    for row in throughput["results"]:
        assert row["errors"] == [], row
        assert row["points"] > 10_000 and row["points_per_s"] > 0 and row["cpu_per_100k_points"] > 0, row
    rows = {row["target"]: row for row in latency["results"]}
    assert set(rows) == {"published", "synthetic"}
    for target, row in rows.items():
        context = f"{target}: {row}"
        assert row["errors"] == [] and row["connections"] == 3, context
        assert row["gaps"] == row["missing"] == row["duplicates"] == row["drops"] == 0, context
        assert 50 <= row["delivered_pct"] <= 110, context
        assert 0 <= row["p50"] <= row["p99"] <= row["max"] < 10_000, context
    assert latency["ratios"]["p99"] is not None
