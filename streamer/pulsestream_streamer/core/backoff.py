"""Exponential backoff with full jitter under a cap: how upstream reconnects are paced.

Full jitter (a uniform draw below the exponential ceiling) spreads the
resubscriptions of many topics, and of many streamer pods, after a generator
restart, instead of having them arrive in waves. Pure: the random source is
injectable for tests.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Exponential backoff with full jitter and a cap (``rng`` injectable for tests)."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt: uniform in [base/2, min(cap, base * 2**attempt)]."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self._rng.uniform(min(self.base / 2, ceiling), ceiling)

    def reset(self) -> None:
        self.attempt = 0
