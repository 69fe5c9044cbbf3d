"""A mergeable latency histogram with 0.1 ms resolution.

The load client runs in several processes; each keeps its own histogram and
the orchestrator adds them up. Storing counts per 0.1 ms bucket (a sparse
dict) instead of every sample keeps the hot path to one dict update per
point and the merge exact: percentiles of the merged histogram are the
percentiles of all samples, to within one bucket.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

#: Buckets per millisecond: 10 gives 0.1 ms resolution.
BUCKETS_PER_MS = 10


class LatencyHistogram:
    """Counts of latencies in milliseconds, bucketed at ``1 / BUCKETS_PER_MS`` ms.

    Negative latencies (a point stamped a little after it was received, which
    clock granularity can produce) are counted in bucket 0 and tallied in
    :attr:`negative`, so they are visible but never distort the percentiles.
    """

    __slots__ = ("counts", "negative")

    def __init__(self, counts: Mapping[int, int] | None = None, negative: int = 0) -> None:
        self.counts: dict[int, int] = dict(counts or {})
        self.negative = negative

    def record(self, millis: float) -> None:
        """Count one latency. The load client inlines this in its hot loop."""
        if millis < 0:
            self.negative += 1
            millis = 0.0
        bucket = int(millis * BUCKETS_PER_MS)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s counts to this histogram."""
        for bucket, count in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count
        self.negative += other.negative

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile(self, fraction: float) -> float | None:
        """The latency (ms, bucket upper edge) below which ``fraction`` of the samples fall; None when empty."""
        total = self.total
        if total == 0:
            return None
        rank = max(1, min(total, math.ceil(fraction * total - 1e-9)))  # nearest-rank definition
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return (bucket + 1) / BUCKETS_PER_MS
        raise AssertionError("unreachable: ranks are within the total")

    def maximum(self) -> float | None:
        """The largest latency recorded (ms, bucket upper edge); None when empty."""
        return (max(self.counts) + 1) / BUCKETS_PER_MS if self.counts else None

    def summary(self) -> dict[str, float | None]:
        """p50, p90, p99 and max in milliseconds, as the report prints them."""
        return {
            "p50": self.percentile(0.50),
            "p90": self.percentile(0.90),
            "p99": self.percentile(0.99),
            "max": self.maximum(),
        }
