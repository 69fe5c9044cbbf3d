"""The history ring: every retained tick and the value of each series at it.

All series tick together (one producer), so the ring keeps one array of tick
times (``array('Q')``, 8 bytes a tick) and one array of values per series
(``array('d')``, 8 bytes a point): ten minutes at 10 ms is 60,000 ticks,
about 2.4 MB for four series, with no per-point Python objects. Appending
is amortised O(1); old ticks are dropped by moving a start offset and the
arrays are compacted once the dead prefix outgrows the live part. Lookups
by sequence are binary searches.

:attr:`History.before_oldest` remembers the sequence of the last tick that
was dropped (or that would precede the first backfilled one), so the ring
can tell exactly whether the point after a given sequence is still held:
that is what makes "resume after sequence N" either exact or an explicit
error, never a silent gap.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence

_COMPACT_AT = 4096


class History:
    """Ticks and per-series values, oldest first, bounded by a time span."""

    def __init__(self, series: Iterable[str] = ()) -> None:
        self._ticks: array[int] = array("Q")
        self._values: dict[str, array[float]] = {name: array("d") for name in series}
        self._start = 0
        #: Sequence of the tick just before the oldest held one (0: none ever existed).
        self.before_oldest = 0

    # --- reading ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ticks) - self._start

    @property
    def series(self) -> list[str]:
        return list(self._values)

    @property
    def oldest(self) -> int | None:
        return self._ticks[self._start] if len(self) else None

    @property
    def newest(self) -> int | None:
        return self._ticks[-1] if len(self) else None

    def index_after(self, sequence: int) -> int:
        """Index of the first held tick ``> sequence`` (``end`` if none)."""
        return bisect.bisect_right(self._ticks, sequence, lo=self._start)

    def index_at_or_after(self, sequence: int) -> int:
        """Index of the first held tick ``>= sequence`` (``end`` if none)."""
        return bisect.bisect_left(self._ticks, sequence, lo=self._start)

    @property
    def begin(self) -> int:
        """Index of the oldest held tick (indexes are valid until the next append)."""
        return self._start

    @property
    def end(self) -> int:
        return len(self._ticks)

    def ticks(self, lo: int, hi: int) -> Sequence[int]:
        return self._ticks[lo:hi]

    def values(self, name: str, lo: int, hi: int) -> Sequence[float]:
        return self._values[name][lo:hi]

    def tick_at(self, index: int) -> int:
        return self._ticks[index]

    def value_at(self, name: str, index: int) -> float:
        return self._values[name][index]

    def previous(self, sequence: int) -> int:
        """The tick before ``sequence``: the last held tick ``< sequence``, else :attr:`before_oldest`."""
        index = bisect.bisect_left(self._ticks, sequence, lo=self._start)
        return self._ticks[index - 1] if index > self._start else self.before_oldest

    def holds_from(self, sequence: int) -> bool:
        """Whether every tick ``>= sequence`` that ever existed is still held (or is yet to come)."""
        return sequence > self.before_oldest

    # --- writing ----------------------------------------------------------------------------------

    def backfill(self, ticks: Sequence[int], values: Mapping[str, Sequence[float]], before: int) -> None:
        """Fill an empty ring with computed history; ``before`` is the tick preceding ``ticks[0]``."""
        if len(self):
            raise RuntimeError("backfill needs an empty history")
        self._ticks = array("Q", ticks)
        self._values = {name: array("d", values[name]) for name in self._values}
        self._start = 0
        self.before_oldest = before

    def append(self, tick: int, values: Mapping[str, float]) -> None:
        """Add one tick (later than the newest) with a value for every series."""
        if len(self) and tick <= self._ticks[-1]:
            raise ValueError(f"tick {tick} is not after the newest {self._ticks[-1]}")
        self._ticks.append(tick)
        for name, column in self._values.items():
            column.append(values[name])

    def extend(self, ticks: Sequence[int], values: Mapping[str, Sequence[float]]) -> None:
        """Add several ticks at once (strictly increasing, the first later than the newest), a value each per series.

        The caller guarantees the order within ``ticks`` (a published batch is sorted and deduplicated first);
        only the seam with what is held is checked here.
        """
        if not ticks:
            return
        if len(self) and ticks[0] <= self._ticks[-1]:
            raise ValueError(f"tick {ticks[0]} is not after the newest {self._ticks[-1]}")
        self._ticks.extend(ticks)
        for name, column in self._values.items():
            column.extend(values[name])

    def trim(self, keep_from: int) -> None:
        """Drop ticks older than ``keep_from`` (always keeping the newest one)."""
        end = len(self._ticks)
        cut = min(bisect.bisect_left(self._ticks, keep_from, lo=self._start), end - 1)
        if cut <= self._start:
            return
        self.before_oldest = self._ticks[cut - 1]
        self._start = cut
        if self._start >= _COMPACT_AT and self._start * 2 >= end:
            del self._ticks[: self._start]
            for column in self._values.values():
                del column[: self._start]
            self._start = 0

    def add_series(self, name: str, compute: Callable[[Sequence[int]], Sequence[float]]) -> None:
        """Start holding ``name``, computing its values at every held tick (so it has full history)."""
        held = self._ticks[self._start :]
        column = array("d", bytes(8 * self._start))
        column.extend(compute(held))
        self._values[name] = column

    def remove_series(self, name: str) -> None:
        self._values.pop(name, None)
