"""The deterministic source: every value is a pure function of (seed, series, tick time).

Nothing here keeps state between calls or reads a clock, so two generator
replicas with the same seed compute the same value for the same series and
tick, and a restarted generator can recompute the history it lost (backfill).
Randomness comes from a 64-bit integer hash (SplitMix64's finaliser) of the
seed, the series name and the lattice cell a time falls in; Python's
``hash()`` is salted per process and is never used.

Each series has a *shape* that yields a number in ``[0, 1]``, scaled to the
series' expected range:

- ``sine+noise``: two sines of different periods plus a little per-tick noise.
- ``random-walk``: multi-octave value noise, a smooth wandering curve that is
  still a pure function of time (no running sum, so no state).
- ``sawtooth``: a counter that climbs for 90 s and drops back, like memory
  reclaimed by a garbage collector.
- ``bursts``: a noisy baseline with occasional spikes that decay, like
  request rates.

The catalogue gives the four well-known series (cpu, memory, requests,
latency) their units and ranges; any other name gets a shape chosen by a
stable hash of the name, in unit ``value`` over ``[0, 100]``.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_MASK = (1 << 64) - 1
_TWO_PI = 2.0 * math.pi
_INV_2_64 = 1.0 / float(1 << 64)


def _mix(x: int) -> int:
    """SplitMix64 finaliser: a well-spread 64-bit hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _uniform(key: int, salt: int, cell: int) -> float:
    """A pseudo-random number in ``[0, 1)`` for (key, salt, cell)."""
    return _mix(key ^ _mix((salt << 48) ^ (cell & _MASK))) * _INV_2_64


@functools.lru_cache(maxsize=8192)
def _lattice(key: int, salt: int, cell: int) -> float:
    """:func:`_uniform` for coarse lattice cells, cached: neighbouring ticks share cells."""
    return _uniform(key, salt, cell)


def series_key(seed: int, name: str) -> int:
    """A stable 64-bit key for one series under one seed (same on every machine)."""
    digest = hashlib.blake2b(f"{seed}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


# --- shapes: (key, t_ms) -> [0, 1] ------------------------------------------------------------

_OCTAVES = ((120_000, 0.45), (30_000, 0.28), (7_000, 0.17), (1_500, 0.10))


def _value_noise(key: int, t_ms: int) -> float:
    """Smooth value noise in ``[0, 1]``: octaves of smoothstep-interpolated lattice values."""
    total = 0.0
    for salt, (period, amplitude) in enumerate(_OCTAVES, start=1):
        cell, offset = divmod(t_ms, period)
        a = _lattice(key, salt, cell)
        b = _lattice(key, salt, cell + 1)
        f = offset / period
        f = f * f * (3.0 - 2.0 * f)
        total += amplitude * (a + (b - a) * f)
    return total


def _sine_noise(key: int, t_ms: int) -> float:
    phase = (key & 0xFFFF) / 0x10000 * _TWO_PI
    slow = math.sin(_TWO_PI * t_ms / 120_000 + phase)
    fast = math.sin(_TWO_PI * t_ms / 17_000 + 2.0 * phase)
    noise = _uniform(key, 7, t_ms) - 0.5
    return 0.5 + 0.3 * slow + 0.1 * fast + 0.1 * noise


def _random_walk(key: int, t_ms: int) -> float:
    return _value_noise(key, t_ms)


def _sawtooth(key: int, t_ms: int) -> float:
    period = 90_000
    shifted = t_ms + (key % period)
    ramp = (shifted % period) / period
    noise = _uniform(key, 9, t_ms) - 0.5
    return 0.05 + 0.85 * ramp + 0.04 * noise


def _bursts(key: int, t_ms: int) -> float:
    window = 20_000
    baseline = 0.15 + 0.05 * (_uniform(key, 11, t_ms) - 0.5)
    level = 0.0
    # A burst started in this window or the previous one may still be decaying.
    for cell in (t_ms // window, t_ms // window - 1):
        if _lattice(key, 12, cell) < 0.35:
            start = cell * window + int(_lattice(key, 13, cell) * window * 0.5)
            if t_ms >= start:
                height = 0.4 + 0.4 * _lattice(key, 14, cell)
                level = max(level, height * math.exp(-(t_ms - start) / 3_000))
    return baseline + level


Shape = Callable[[int, int], float]

#: Shapes by the name ListSeries reports, in a fixed order (a stable hash picks one for unknown series).
SHAPES: dict[str, Shape] = {
    "sine+noise": _sine_noise,
    "random-walk": _random_walk,
    "sawtooth": _sawtooth,
    "bursts": _bursts,
}


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """What a series is: its unit and expected range for axes, and its shape."""

    name: str
    unit: str
    description: str
    expected_min: float
    expected_max: float
    shape: str


_KNOWN: dict[str, SeriesInfo] = {
    info.name: info
    for info in (
        SeriesInfo("cpu", "ratio", "CPU utilisation of a simulated host (0 = idle, 1 = saturated).", 0.0, 1.0,
                   "sine+noise"),
        SeriesInfo("memory", "MiB", "Resident memory of a simulated process; climbs, then drops at each collection.",
                   0.0, 2048.0, "sawtooth"),
        SeriesInfo("requests", "req/s", "Request rate of a simulated service, with occasional bursts.", 0.0, 1000.0,
                   "bursts"),
        SeriesInfo("latency", "ms", "Request latency of a simulated service, wandering smoothly.", 0.0, 250.0,
                   "random-walk"),
    )
}  # fmt: skip


def describe(name: str) -> SeriesInfo:
    """The catalogue entry for ``name``; names outside the well-known four get a hashed shape."""
    known = _KNOWN.get(name)
    if known is not None:
        return known
    shapes = list(SHAPES)
    shape = shapes[series_key(0, name) % len(shapes)]
    return SeriesInfo(name, "value", f"Synthetic series ({shape}).", 0.0, 100.0, shape)


class Source:
    """Values of any series at any tick, for one seed. Pure: same arguments, same value."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._compiled: dict[str, tuple[int, Shape, float, float]] = {}

    def _compile(self, name: str) -> tuple[int, Shape, float, float]:
        compiled = self._compiled.get(name)
        if compiled is None:
            info = describe(name)
            span = info.expected_max - info.expected_min
            compiled = (series_key(self.seed, name), SHAPES[info.shape], info.expected_min, span)
            self._compiled[name] = compiled
        return compiled

    def value(self, name: str, t_ms: int) -> float:
        """The value of ``name`` at tick time ``t_ms`` (epoch milliseconds), rounded to 4 decimals."""
        key, shape, low, span = self._compile(name)
        unit = min(1.0, max(0.0, shape(key, t_ms)))
        return round(low + span * unit, 4)

    def values(self, name: str, ticks: Iterable[int]) -> list[float]:
        """Values of ``name`` at each tick (used to backfill history)."""
        key, shape, low, span = self._compile(name)
        return [round(low + span * min(1.0, max(0.0, shape(key, t))), 4) for t in ticks]
