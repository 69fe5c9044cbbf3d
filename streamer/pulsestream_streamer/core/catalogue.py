"""What the generator offers: series with unit, description and expected range (from ``ListSeries``).

The catalogue is refreshed from the generator and kept when the generator is
unreachable, so ``/v1/series`` and stream validation keep working during an
upstream outage. Before the first successful ``ListSeries`` it holds the
configured series names with no metadata.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pulsestream.spec import RESOLUTIONS

__all__ = ["Catalogue", "SeriesInfo"]


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """One series' metadata, as ``/v1/series`` and the snapshot ``meta`` show it."""

    name: str
    unit: str = ""
    description: str = ""
    expected_min: float = 0.0
    expected_max: float = 0.0
    shape: str = ""
    #: "synthetic" (computed by the generator) or "published" (written by producers); "" when unknown.
    origin: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "unit": self.unit,
            "description": self.description,
            "expectedRange": [self.expected_min, self.expected_max],
            "shape": self.shape,
            "origin": self.origin,
        }


@dataclass(frozen=True, slots=True)
class Catalogue:
    """The series on offer and the generator's clock; ``known`` is False until the generator answered.

    Until then ``resolutions`` are those of the shared spec (:data:`pulsestream.spec.RESOLUTIONS`),
    the same list the generator serves in ``ListSeries``.
    """

    series: dict[str, SeriesInfo] = field(default_factory=dict)
    frequency_ms: int = 0
    retention_ms: int = 0
    resolutions: tuple[str, ...] = tuple(RESOLUTIONS)
    known: bool = False

    @classmethod
    def placeholder(cls, names: Iterable[str]) -> Catalogue:
        return cls(series={name: SeriesInfo(name) for name in names})

    def info(self, name: str) -> SeriesInfo:
        return self.series.get(name) or SeriesInfo(name)
