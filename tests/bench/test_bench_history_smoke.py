"""``python -m bench --scenario ingest --smoke --history redis``: the shared-history rows cannot rot.

A real redis-server (started by the benchmark), generator, streamer and producer: the flood is
acknowledged with the Redis history and the Redis server's CPU is measured, and the publish -> browser
clients get every point with no gap and no duplicate.
"""

import json
import subprocess
import sys
from pathlib import Path

from redisserver import redis_binary

ROOT = Path(__file__).resolve().parents[2]


def test_the_ingest_benchmark_measures_the_redis_history_with_the_redis_servers_own_cpu(tmp_path: Path) -> None:
    redis_binary()  # skipped without redis-server on a laptop, a failure in CI
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--scenario", "ingest", "--smoke", "--history", "redis", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    throughput, latency = json.loads(out.read_text())["scenarios"]
    rows = {row["target"]: row for row in throughput["results"]}
    assert set(rows) == {
        "publish, library (redis)",
        "  redis-server, for library",
        "publish, pre-encoded (redis)",
        "  redis-server, for pre-encoded",
    }, rows
    for row in rows.values():
        assert row["errors"] == [] and row["history"] == "redis", row
        assert row["points"] > 1_000 and row["cpu_per_100k_points"] > 0, row
    published = {row["target"]: row for row in latency["results"]}["published (redis)"]
    assert published["errors"] == [] and published["connections"] == 3, published
    assert published["gaps"] == published["missing"] == published["duplicates"] == published["drops"] == 0
    assert latency["ratios"]["p99"] is not None  # published (redis) / synthetic
