"""The live settings' cross-field rules: one table, read by the model, the services, the operator and the CRD.

Each field of a :class:`~pulsestream.spec.StreamSpec` checks its own value
(type, bounds); the rules here relate values to each other. :data:`RULES` is
the one definition of each rule:

- ``StreamSpec`` runs every rule once its fields are valid (a model
  validator), so a settings file, a service's environment and a
  ``StreamConfig`` that break one are refused alike, each refusal carrying the
  rule's :attr:`Rule.reason`;
- the operator reports that reason as ``Ready=False``;
- the CRD carries each rule's :attr:`Rule.cel` as an ``x-kubernetes-validations``
  entry on ``spec`` (``make crd``), so the API server refuses the same specs;
  ``tests/operator`` evaluates those rules with cel-python and checks that
  they agree with :attr:`Rule.holds` on a table of specs.

Pure functions over a spec whose fields are valid; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pulsestream.resolutions import COARSEST

if TYPE_CHECKING:
    from pulsestream.spec import StreamSpec

#: Most points one series' history ring may hold (retention / frequency): 24h at 100ms is 864,000.
MAX_HISTORY_POINTS = 1_000_000

#: A field reference in :attr:`Rule.cel`: ``{rateLimit.burst}``.
FIELD_REFERENCE = re.compile(r"\{([A-Za-z][A-Za-z.]*)\}")


@dataclass(frozen=True)
class Problem:
    """One refusal: a stable CamelCase ``reason`` (the operator's condition reason) and a message for people.

    ``fields`` names the spec fields concerned (camelCase, dotted: ``rateLimit.burst``),
    so a service can name its own environment variables for them.
    """

    reason: str
    message: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """A relation between spec values that must hold.

    ``cel`` is the same relation in CEL over the CRD's ``spec`` (``self``):
    each ``{field}`` stands for that field's value, typed as the API server
    sees it (a duration field as a CEL ``duration``, a number as a ``double``),
    with the model's default when the field is absent. The operator's CRD
    generator expands the references (:mod:`pulsestream_operator.crdrules`).
    """

    reason: str
    holds: Callable[[StreamSpec], bool]
    explain: Callable[[StreamSpec], str]
    cel: str
    summary: str

    @property
    def fields(self) -> tuple[str, ...]:
        """The spec fields the rule relates, in the order ``cel`` names them (the first is the one to blame)."""
        return tuple(dict.fromkeys(FIELD_REFERENCE.findall(self.cel)))

    def check(self, spec: StreamSpec) -> Problem | None:
        """``None`` when the rule holds for ``spec``, else why not."""
        return None if self.holds(spec) else Problem(self.reason, self.explain(spec), self.fields)


_COARSEST_NAME, _COARSEST_SECONDS = COARSEST

#: Every rule, in the order problems are reported (the operator's condition gives the first one's reason).
RULES: tuple[Rule, ...] = (
    Rule(
        reason="BurstBelowRate",
        holds=lambda spec: spec.rate_limit.burst >= spec.rate_limit.requests_per_second,
        explain=lambda spec: (
            f"rateLimit.burst ({spec.rate_limit.burst}) must be at least rateLimit.requestsPerSecond "
            f"({spec.rate_limit.requests_per_second:g}): a bucket smaller than one second of requests rejects "
            "clients that stay within the rate"
        ),
        cel="{rateLimit.requestsPerSecond} <= double({rateLimit.burst})",
        summary="rateLimit.burst must be at least rateLimit.requestsPerSecond",
    ),
    Rule(
        reason="FrequencyTooSlow",
        holds=lambda spec: spec.frequency.seconds <= _COARSEST_SECONDS,
        explain=lambda spec: (
            f"frequency ({spec.frequency}) must be at most the coarsest resolution's bucket ({_COARSEST_NAME}), "
            "or its buckets stay empty"
        ),
        cel=f"{{frequency}} <= duration('{_COARSEST_NAME}')",
        summary=f"frequency must be at most the coarsest resolution's bucket ({_COARSEST_NAME})",
    ),
    Rule(
        reason="FlushNotBelowHeartbeat",
        holds=lambda spec: spec.flush_interval.seconds < spec.heartbeat_interval.seconds,
        explain=lambda spec: (
            f"flushInterval ({spec.flush_interval}) must be shorter than heartbeatInterval "
            f"({spec.heartbeat_interval}), or heartbeats go out while points wait in the batch"
        ),
        cel="{flushInterval} < {heartbeatInterval}",
        summary="flushInterval must be shorter than heartbeatInterval",
    ),
    Rule(
        reason="RetentionBelowFrequency",
        holds=lambda spec: spec.retention.seconds >= spec.frequency.seconds,
        explain=lambda spec: f"retention ({spec.retention}) must hold at least one point (frequency {spec.frequency})",
        cel="{retention} >= {frequency}",
        summary="retention must be at least frequency, to hold one point",
    ),
    Rule(
        reason="HistoryTooLarge",
        holds=lambda spec: spec.retention.seconds / spec.frequency.seconds <= MAX_HISTORY_POINTS,
        explain=lambda spec: (
            f"retention / frequency ({spec.retention} / {spec.frequency}) is "
            f"{spec.retention.seconds / spec.frequency.seconds:,.0f} points per series; "
            f"at most {MAX_HISTORY_POINTS:,} fit the generator's memory budget"
        ),
        # Whole milliseconds: CEL cannot scale a duration, and the generator's ring counts
        # milliseconds too. Only a sub-millisecond part near the limit can tell the two apart.
        cel=f"{{retention}}.getMilliseconds() <= {MAX_HISTORY_POINTS} * {{frequency}}.getMilliseconds()",
        summary=f"retention / frequency must be at most {MAX_HISTORY_POINTS:,} points per series",
    ),
    Rule(
        reason="SeriesDeclaredTwice",
        holds=lambda spec: not _declared_twice(spec),
        explain=lambda spec: (
            f"{', '.join(_declared_twice(spec))} in both published and series: a series is either synthetic "
            "(computed by the generator, in series) or published (written by producers), not both"
        ),
        cel="{published}.all(p, !(p.name in {series}))",
        summary="a name is either in series (synthetic) or in published, not both",
    ),
)


def _declared_twice(spec: StreamSpec) -> list[str]:
    synthetic = set(spec.series)
    return [entry.name for entry in spec.published if entry.name in synthetic]


def broken(spec: StreamSpec, rules: Sequence[Rule] = RULES) -> list[Problem]:
    """Every rule ``spec`` breaks, in table order (empty when it obeys them all)."""
    return [problem for rule in rules if (problem := rule.check(spec)) is not None]


class RulesBroken(ValueError):
    """Raised by ``StreamSpec``'s validator; :func:`pulsestream.spec.parse_spec` turns it into a ``SpecError``."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(problem.message for problem in self.problems))
