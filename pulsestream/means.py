"""Means without binary floating-point noise, for the generator's buckets and the streamer's alike.

The mean of ``0.4242`` and ``0.4241`` is ``0.42415`` to a person and
``0.42414999999999997`` to a double: the sum of decimal values that have no
exact binary form carries the error of each. Fifteen significant digits is
as many as any decimal keeps through a double and back (``DBL_DIG``), so
rounding there removes exactly that noise and never a digit that was in the
data, whatever its scale.
"""

from __future__ import annotations

__all__ = ["mean"]


def mean(total: float, count: int) -> float:
    """``total / count`` rounded to 15 significant digits (``count`` > 0)."""
    return float(f"{total / count:.15g}")
