"""Checking published points into a :class:`Batch` (pure: no I/O, no clock of its own).

A ``PublishRequest`` is checked as a whole before anything is stored: the
first bad point refuses the batch (:class:`Refused`, naming the point's
index and series), so a producer either gets everything it sent stored (or
counted as duplicate or out of order) or nothing, and fixes or drops exactly
the point named. What a point must be, in this order:

1. a series name within :data:`pulsestream.spec.SERIES_NAME_PATTERN`;
2. not a synthetic series (those are the generator's own);
3. a series that exists, or that may be created: undeclared series allowed
   (``GENERATOR_INGEST_UNDECLARED=create``) and room left under
   ``GENERATOR_INGEST_MAX_SERIES``;
4. a finite value (no NaN, no infinities);
5. a timestamp (when set) no more than :data:`MAX_AHEAD_MS` ahead of the
   clock and not older than the retention (it could not be kept).

OTLP metrics (:mod:`.otlp`) use the same per-point check (:meth:`Rules.problem`)
but drop bad points one by one and report them in OTLP's ``partial_success``,
as that protocol asks.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

from pulsestream.refusals import Reason
from pulsestream.spec import SERIES_NAME_PATTERN
from pulsestream.v1 import ingest_pb2

__all__ = ["MAX_AHEAD_MS", "Batch", "Problem", "Refused", "Rules", "SeriesPoints", "check_publish"]

#: How far ahead of the generator's clock a timestamp may be: other hosts' clocks differ a little, and a point
#: far in the future would make its series refuse every real-time point (older) until the clock catches up.
MAX_AHEAD_MS = 60_000

_NAME = re.compile(SERIES_NAME_PATTERN)


class Refused(Exception):
    """A batch is refused; ``str()`` is for people, ``reason`` and ``metadata`` say the same as data."""

    def __init__(self, reason: Reason, message: str, **metadata: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = metadata


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one point cannot be stored: the refusal reason, the field at fault, and what to tell people."""

    reason: Reason
    field: str
    message: str
    facts: dict[str, object] = dataclasses.field(default_factory=dict)


@dataclass(slots=True)
class SeriesPoints:
    """One series' points of a batch, in request order: timed ones (epoch ms) and untimed values ("now")."""

    times: list[int] = dataclasses.field(default_factory=list)
    values: list[float] = dataclasses.field(default_factory=list)
    untimed: list[float] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.times) + len(self.untimed)


#: A checked batch: series name -> its points. Insertion order is the order series first appear.
Batch = dict[str, SeriesPoints]


@dataclass(frozen=True, slots=True)
class Rules:
    """What the generator accepts right now (settings and the store's state), as the checks need it."""

    now: int
    retention_ms: int
    synthetic: frozenset[str]
    exists: Callable[[str], bool]
    #: Published series that may still be created (GENERATOR_INGEST_MAX_SERIES minus those that exist).
    room: int
    max_series: int
    create_undeclared: bool = True
    max_points: int = 10_000

    @property
    def retained_from(self) -> int:
        return self.now - self.retention_ms

    def name_problem(self, name: str) -> Problem | None:
        """Why points of ``name`` cannot be stored (whatever their value), or ``None``."""
        if not _NAME.match(name):
            return Problem(
                Reason.BAD_POINT,
                "series",
                f"series name {name[:64]!r} breaks the rules: a letter, then letters, digits and _ . : / ; = ~ -, "
                "at most 128 characters",
            )
        if name in self.synthetic:
            return Problem(
                Reason.SYNTHETIC_SERIES, "series", f"series {name!r} is synthetic: only the generator writes it"
            )
        if not self.create_undeclared and not self.exists(name):
            return Problem(
                Reason.UNDECLARED_SERIES,
                "series",
                f"series {name!r} is not declared (settings: published), and this generator refuses undeclared "
                "series (GENERATOR_INGEST_UNDECLARED=refuse)",
            )
        return None

    def value_problem(self, value: float, t: int | None) -> Problem | None:
        """Why a point with this value and timestamp (ms, ``None`` = now) cannot be stored, or ``None``."""
        if value - value != 0.0:  # NaN and both infinities, without a function call
            return Problem(Reason.BAD_POINT, "value", f"value {value} is not a finite number")
        if t is None:
            return None
        if t > self.now + MAX_AHEAD_MS:
            return Problem(
                Reason.BAD_POINT,
                "timestamp",
                f"timestamp {t} ms is more than {MAX_AHEAD_MS // 1000} s ahead of the generator's clock ({self.now})",
                {"now": self.now},
            )
        if t < self.retained_from:
            return Problem(
                Reason.BAD_POINT,
                "timestamp",
                f"timestamp {t} ms is older than the retention ({self.retention_ms} ms): "
                f"points before {self.retained_from} cannot be kept",
                {"retained_from": self.retained_from},
            )
        return None


def _refuse(problem: Problem, index: int, name: str) -> Refused:
    return Refused(
        problem.reason,
        f"points[{index}] ({name[:64]!r}): {problem.message}; nothing of this batch was stored",
        index=index,
        series=name,
        field=problem.field if problem.reason is Reason.BAD_POINT else None,  # the others are about the series
        **problem.facts,
    )


def _timestamp_ms(point: ingest_pb2.PublishPoint) -> int | None:
    if not point.HasField("timestamp"):
        return None
    stamp = point.timestamp
    return stamp.seconds * 1000 + stamp.nanos // 1_000_000


def check_publish(request: ingest_pb2.PublishRequest, rules: Rules) -> Batch:
    """The batch of a ``PublishRequest``, or :class:`Refused` naming the first bad point (nothing is stored)."""
    points = request.points
    if len(points) > rules.max_points:
        raise Refused(
            Reason.TOO_MANY_POINTS,
            f"points: {len(points)} points in one request, at most {rules.max_points}; split the batch",
            max_points=rules.max_points,
        )
    batch: Batch = {}
    created = 0
    for index, point in enumerate(points):
        name = point.series
        part = batch.get(name)
        if part is None:
            problem = rules.name_problem(name)
            if problem is not None:
                raise _refuse(problem, index, name)
            if not rules.exists(name):
                created += 1
                if created > rules.room:
                    raise Refused(
                        Reason.TOO_MANY_SERIES,
                        f"points[{index}] ({name[:64]!r}): would create more than {rules.max_series} published "
                        "series (GENERATOR_INGEST_MAX_SERIES); nothing of this batch was stored",
                        index=index,
                        series=name,
                        max_series=rules.max_series,
                    )
            part = batch[name] = SeriesPoints()
        value = point.value
        t = _timestamp_ms(point)
        problem = rules.value_problem(value, t)
        if problem is not None:
            raise _refuse(problem, index, name)
        if t is None:
            part.untimed.append(value)
        else:
            part.times.append(t)
            part.values.append(value)
    return batch
