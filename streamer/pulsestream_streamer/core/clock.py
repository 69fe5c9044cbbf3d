"""Wall-clock time in the unit of point timestamps and sequences: epoch milliseconds."""

from __future__ import annotations

import time

__all__ = ["epoch_ms"]


def epoch_ms() -> int:
    """Wall-clock time in epoch milliseconds (the unit of point timestamps and sequences)."""
    return time.time_ns() // 1_000_000
