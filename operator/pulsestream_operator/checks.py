"""Checks on a valid :class:`StreamSpec` that a schema cannot express.

The CRD schema (and :func:`pulsestream.spec.parse_spec`) check each value on
its own; these rules relate values to each other. A spec that breaks one is
not applied: the operator keeps the last good settings in the ConfigMap and
reports ``Ready=False`` with the problem's reason. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from pulsestream.spec import RESOLUTIONS, StreamSpec

#: Most points one series' history ring may hold (retention / frequency): 24h at 100ms is 864,000.
MAX_HISTORY_POINTS = 1_000_000


@dataclass(frozen=True)
class Problem:
    """One broken rule: a condition ``reason`` (CamelCase) and a message for people."""

    reason: str
    message: str


def problems(spec: StreamSpec) -> list[Problem]:
    """Every rule ``spec`` breaks, in a stable order (empty when it is good)."""
    found: list[Problem] = []
    rate = spec.rate_limit
    if rate.burst < rate.requests_per_second:
        found.append(
            Problem(
                "BurstBelowRate",
                f"rateLimit.burst ({rate.burst}) must be at least rateLimit.requestsPerSecond "
                f"({rate.requests_per_second:g}): a bucket smaller than one second of requests rejects "
                "clients that stay within the rate",
            )
        )
    coarsest_name, coarsest = max(RESOLUTIONS.items(), key=lambda item: item[1])
    if spec.frequency.seconds > coarsest:
        found.append(
            Problem(
                "FrequencyTooSlow",
                f"frequency ({spec.frequency}) must be at most the coarsest resolution's bucket ({coarsest_name}), "
                "or its buckets stay empty",
            )
        )
    if spec.flush_interval.seconds >= spec.heartbeat_interval.seconds:
        found.append(
            Problem(
                "FlushNotBelowHeartbeat",
                f"flushInterval ({spec.flush_interval}) must be shorter than heartbeatInterval "
                f"({spec.heartbeat_interval}), or heartbeats go out while points wait in the batch",
            )
        )
    if spec.retention.seconds < spec.frequency.seconds:
        found.append(
            Problem(
                "RetentionBelowFrequency",
                f"retention ({spec.retention}) must hold at least one point (frequency {spec.frequency})",
            )
        )
    points = spec.retention.seconds / spec.frequency.seconds
    if points > MAX_HISTORY_POINTS:
        found.append(
            Problem(
                "HistoryTooLarge",
                f"retention / frequency ({spec.retention} / {spec.frequency}) is {points:,.0f} points per series; "
                f"at most {MAX_HISTORY_POINTS:,} fit the generator's memory budget",
            )
        )
    return found
