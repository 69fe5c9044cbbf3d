"""Where published points live, behind a small interface: the in-memory default, and room for a shared one.

:class:`PublishedStore` is what the rest of the generator needs from a
published history: take a checked batch (:mod:`.publishing`) and say what
became of each point, hand every stored run of points to the fan-out, read
a series' :class:`~.timeline.Timeline` for replay, close quiet buckets by
the clock, trim to the retention. :class:`MemoryStore` keeps it in this
process (``GENERATOR_HISTORY_URL`` empty, the default); a backend shared by
replicas (Redis Streams, ``GENERATOR_HISTORY_URL=redis://...``) implements
the same protocol, keeping each replica's timelines as a local mirror, so
the servicers and the hub do not change. ``append`` is a coroutine for that
reason (a shared backend awaits its server); the memory store never waits.
A shared backend hands stored runs and clock-closed buckets to the fan-out
when its follower mirrors them (the ``Stored`` and ``Sealed`` callbacks), so
every replica fans out from the same path.

The store's rules, per series (sequence = timestamp in epoch ms):

- a point newer than the newest stored one is stored;
- a point whose (series, timestamp) is already stored is a duplicate:
  stored once, counted (a producer's retry);
- any other older point is out of order: not stored, counted (as
  Prometheus's TSDB does by default); within one batch, points of a series
  are sorted first, so only points older than what was stored before count;
- a point without a timestamp is stored at the generator's clock, after
  the newest point (so it is never a duplicate of one).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pulsestream.spec import PublishedSeries
from pulsestream_generator.journal import Journal, Replayed
from pulsestream_generator.publishing import Batch, SeriesPoints
from pulsestream_generator.timeline import Appended, Closed, Timeline

__all__ = [
    "Described",
    "MemoryStore",
    "Outcome",
    "PublishedStore",
    "Sealed",
    "SeriesMeta",
    "Stored",
    "Unavailable",
    "sorted_points",
]


@dataclass(frozen=True, slots=True)
class SeriesMeta:
    """What ListSeries says about a published series: from its declaration, else from OTLP, else nothing."""

    unit: str = ""
    description: str = ""
    expected_min: float = 0.0
    expected_max: float = 0.0
    declared: bool = False

    @classmethod
    def declared_as(cls, entry: PublishedSeries) -> SeriesMeta:
        low, high = entry.expected_range or (0.0, 0.0)
        return cls(entry.unit, entry.description, low, high, declared=True)


class Unavailable(Exception):
    """The store cannot take a batch now (a shared backend is unreachable): nothing was acknowledged."""


@dataclass(slots=True)
class Outcome:
    """What became of a batch: counts of stored, duplicate, out-of-order and late points."""

    accepted: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    late: int = 0
    #: Series this batch created.
    created: list[str] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.out_of_order += other.out_of_order
        self.late += other.late
        self.created += other.created


#: The fan-out's callback: a run of points was stored in a timeline (called once per series per batch).
Stored = Callable[[Timeline, Appended], None]
#: The fan-out's callback for buckets the clock closed outside :meth:`PublishedStore.seal` (a shared backend).
Sealed = Callable[[Timeline, list[Closed]], None]
#: Metadata producers sent with a batch (OTLP's unit and description), per series.
Described = Mapping[str, tuple[str, str]]


class PublishedStore(Protocol):
    """The published history the hub and the ingest servicers use."""

    def __contains__(self, name: object) -> bool: ...

    def __len__(self) -> int: ...

    def names(self) -> list[str]:
        """Published series in ListSeries order: declared ones as declared, then created ones by name."""
        ...

    def timeline(self, name: str) -> Timeline | None: ...

    def meta(self, name: str) -> SeriesMeta: ...

    def describe(self, name: str, unit: str, description: str) -> None:
        """Metadata a producer sent (OTLP's unit and description) for a series nobody declared."""
        ...

    def declare(self, declared: Sequence[PublishedSeries]) -> list[str]:
        """Apply the settings' declarations; return the series that no longer exist (declared and empty)."""
        ...

    def remove(self, name: str) -> None: ...

    async def append(self, batch: Batch, now: int, meta: Described | None = None) -> Outcome:
        """Store a checked batch (and what producers said about its series, for those nobody declared).

        The memory store hands every stored run to the ``Stored`` callback before this returns; a shared
        backend returns once its server accepted the batch, and its follower hands the runs over.
        """
        ...

    def seal(self, now: int, delay_ms: int) -> Iterator[tuple[Timeline, list[Closed]]]:
        """Close by the clock the open buckets of series gone quiet for ``delay_ms`` past a bucket's end."""
        ...

    def trim(self, keep_from: int, keep: Collection[str]) -> list[str]:
        """Drop points older than ``keep_from``; forget undeclared series left with nothing newer (not ``keep``)."""
        ...


def sorted_points(part: SeriesPoints) -> tuple[list[int], list[float]]:
    """The timed points of one series in time order, the first of equal timestamps kept."""
    times, values = part.times, part.values
    if all(a < b for a, b in itertools.pairwise(times)):
        return times, values
    pairs = sorted(zip(times, values, strict=True), key=lambda pair: pair[0])  # stable: the first of equals first
    kept_t: list[int] = []
    kept_v: list[float] = []
    for t, v in pairs:
        if not kept_t or t > kept_t[-1]:
            kept_t.append(t)
            kept_v.append(v)
    return kept_t, kept_v


class MemoryStore:
    """Published history in this process's memory (the default backend), optionally journaled (:mod:`.journal`)."""

    def __init__(self, on_stored: Stored, journal: Journal | None = None) -> None:
        self._on_stored = on_stored
        self._journal = journal
        self._timelines: dict[str, Timeline] = {}
        self._meta: dict[str, SeriesMeta] = {}
        self._declared: list[str] = []

    def __contains__(self, name: object) -> bool:
        return name in self._timelines

    def __len__(self) -> int:
        return len(self._timelines)

    def names(self) -> list[str]:
        declared = set(self._declared)
        return self._declared + sorted(name for name in self._timelines if name not in declared)

    def timeline(self, name: str) -> Timeline | None:
        return self._timelines.get(name)

    def meta(self, name: str) -> SeriesMeta:
        return self._meta.get(name) or SeriesMeta()

    def describe(self, name: str, unit: str, description: str) -> None:
        current = self._meta.get(name)
        if current is not None and (current.declared or (current.unit, current.description) == (unit, description)):
            return
        self._meta[name] = SeriesMeta(unit, description)

    def declare(self, declared: Sequence[PublishedSeries]) -> list[str]:
        names = [entry.name for entry in declared]
        gone = []
        for name in self._declared:
            if name not in names:
                self._meta.pop(name, None)
                timeline = self._timelines.get(name)
                if timeline is not None and not len(timeline):
                    del self._timelines[name]
                    gone.append(name)
        for entry in declared:
            self._meta[entry.name] = SeriesMeta.declared_as(entry)
            self._timelines.setdefault(entry.name, Timeline(entry.name))
        self._declared = names
        return gone

    def remove(self, name: str) -> None:
        self._timelines.pop(name, None)
        self._meta.pop(name, None)
        if name in self._declared:
            self._declared.remove(name)

    async def append(self, batch: Batch, now: int, meta: Described | None = None) -> Outcome:
        outcome = self.append_now(batch, now)
        for name, (unit, description) in (meta or {}).items():
            self.describe(name, unit, description)
        return outcome

    def ensure(self, name: str) -> Timeline:
        """The timeline of ``name``, made empty when there is none (a shared backend's mirror adds series)."""
        timeline = self._timelines.get(name)
        if timeline is None:
            timeline = self._timelines[name] = Timeline(name)
        return timeline

    def append_now(self, batch: Batch, now: int) -> Outcome:
        """:meth:`append` without the coroutine (the memory store never waits).

        What is new is worked out first, written to the journal (when there is one), and only then
        stored and fanned out: an acknowledged point is always in the journal.
        """
        total = Outcome()
        runs: list[tuple[str, list[int], list[float]]] = []
        for name, part in batch.items():
            timeline = self._timelines.get(name)
            times, values, outcome = _new_points(timeline, part, now)
            total.add(outcome)
            if times:
                runs.append((name, times, values))
        if self._journal is not None and runs:
            self._journal.points(runs)
        for name, times, values in runs:
            timeline = self._timelines.get(name)
            if timeline is None:
                timeline = self._timelines[name] = Timeline(name)
                total.created.append(name)
            late = timeline.late_points
            appended = timeline.append(times, values)
            total.accepted += len(times)
            total.late += timeline.late_points - late
            self._on_stored(timeline, appended)
        return total

    def seal(self, now: int, delay_ms: int) -> Iterator[tuple[Timeline, list[Closed]]]:
        sealed: list[tuple[Timeline, list[Closed]]] = []
        for timeline in self._timelines.values():
            closed = timeline.seal(now, delay_ms)
            if closed:
                sealed.append((timeline, closed))
        if self._journal is not None and sealed:
            self._journal.seals(
                (timeline.name, entry.index, entry.hi) for timeline, closed in sealed for entry in closed
            )
        return iter(sealed)

    def trim(self, keep_from: int, keep: Collection[str]) -> list[str]:
        declared = set(self._declared)
        expired = []
        for name, timeline in self._timelines.items():
            if timeline.newest and timeline.newest < keep_from and name not in declared and name not in keep:
                expired.append(name)
            else:
                timeline.trim(keep_from)
        for name in expired:
            self.remove(name)
        if self._journal is not None:
            self._journal.prune(keep_from)
        return expired

    # --- the journal ------------------------------------------------------------------------------

    def recover(self, keep_from: int, synthetic: Collection[str]) -> Replayed | None:
        """Replay the journal (at start, before serving): the points acknowledged before a crash come back.

        Points older than ``keep_from`` are dropped after the replay; series now synthetic are skipped.
        """
        if self._journal is None:
            return None

        def points(name: str, times: Sequence[int], values: Sequence[float]) -> None:
            if name in synthetic:
                return
            timeline = self._timelines.get(name)
            if timeline is None:
                timeline = self._timelines[name] = Timeline(name)
            start = bisect.bisect_right(times, timeline.newest)
            if start < len(times):
                timeline.append(times[start:], values[start:])

        def seal(name: str, index: int, through: int) -> None:
            timeline = self._timelines.get(name)
            if timeline is not None and index < len(timeline.closed_through):
                timeline.closed_through[index] = max(timeline.closed_through[index], through)

        replayed = self._journal.replay(points, seal)
        self.trim(keep_from, keep=())
        self._journal.open()
        return replayed

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()


def _new_points(timeline: Timeline | None, part: SeriesPoints, now: int) -> tuple[list[int], list[float], Outcome]:
    """The points of ``part`` to store in ``timeline`` (times ascending), and the duplicates and out-of-order."""
    outcome = Outcome()
    times, values = sorted_points(part)
    outcome.duplicates = len(part.times) - len(times)  # equal timestamps within the batch: the first counts
    newest = timeline.newest if timeline is not None else 0
    if timeline is not None and times and times[0] <= newest:
        start = bisect.bisect_right(times, newest)
        held = timeline.history
        for t in times[:start]:
            i = held.index_at_or_after(t)
            if i < held.end and held.tick_at(i) == t:
                outcome.duplicates += 1
            else:
                outcome.out_of_order += 1
        times, values = times[start:], values[start:]
    if part.untimed:
        first = max(now, (times[-1] if times else newest) + 1)
        times = [*times, *range(first, first + len(part.untimed))]
        values = [*values, *part.untimed]
    return times, values, outcome
