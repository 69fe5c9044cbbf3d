"""Validating a ``SubscribeRequest`` into a :class:`Query` (pure; errors name the field).

Where a stream starts is normalised to one cursor, ``after``: the stream
carries every point (raw) or bucket (aggregated) whose sequence is greater
than ``after``. For raw points:

- ``after_sequence: N`` -> ``after = N``.
- ``start_time: T`` -> every point at or after ``T``: ``after = T - 1``.
- no start -> live only: ``after`` = the newest tick.

For buckets, ``start_time`` includes the bucket that holds ``T`` (a chart
window starts with a full bucket), and "live only" begins with the bucket
that is open now.

Synthetic series share one cursor (they tick together). Each published
series has its own timeline, so a query holds one cursor per published
series too (:attr:`Query.starts`): the same value as ``after`` for a start
given by time or sequence, and for "live only" that series' own newest point
(or its open bucket).

"Older than retention" is decided by what the history ring still holds, not
by arithmetic on the clock: a start is refused only if a point it asks for
has already been dropped (:meth:`History.holds_from`); ``start_time`` must
also be within the announced retention window and not in the future. The
ring keeps a margin beyond the retention (one 1m bucket), so any start inside
the announced window is served in full.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from pulsestream.refusals import Reason
from pulsestream.spec import RESOLUTIONS
from pulsestream.v1 import timeseries_pb2
from pulsestream_generator.aggregation import WIDTHS, bucket_start
from pulsestream_generator.history import History
from pulsestream_generator.publishedstore import PublishedStore

#: Most series one Subscribe may name (the live settings allow at most 64 series).
MAX_SERIES = 64
#: How far in the future an ``after_sequence`` may be: other replicas' clocks may run a little ahead.
FUTURE_TOLERANCE_MS = 60_000


def _shown(names: Collection[str], most: int = 5, length: int = 40) -> str:
    """Names quoted in an error, cut short: the message travels in a gRPC trailer, which clients cap at 8 KiB
    (a longer one reaches them as RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT)."""
    quoted = [repr(name if len(name) <= length else name[:length] + "...") for name in list(names)[:most]]
    more = len(names) - most
    return ", ".join(quoted) + (f" and {more} more" if more > 0 else "")


class InvalidArgument(ValueError):
    """A request field is wrong; ``str()`` names the field and says what is allowed (for people).

    ``reason`` and ``metadata`` say the same as data (:mod:`pulsestream.refusals`): ``metadata``
    always has ``field``, so a program never parses the message.
    """

    def __init__(self, message: str, reason: Reason = Reason.BAD_ARGUMENT, **metadata: object) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = metadata


@dataclass(frozen=True, slots=True)
class Query:
    """A validated subscription: which series, at which resolution, from which cursor (per timeline)."""

    series: tuple[str, ...]
    resolution: str
    width_ms: int
    after: int
    #: The requested series that are synthetic (tick together, from ``after``) and published (each its own).
    synthetic: tuple[str, ...] = ()
    published: tuple[str, ...] = ()
    #: Cursor of each published series.
    starts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.synthetic and not self.published:  # a query made by hand names synthetic series
            object.__setattr__(self, "synthetic", self.series)

    @property
    def raw(self) -> bool:
        return self.width_ms == 0

    @property
    def width_index(self) -> int | None:
        """The bucket width's index in :data:`~.aggregation.WIDTHS` (``None`` for raw)."""
        return WIDTHS.index(self.width_ms) if self.width_ms else None

    def first_needed(self, after: int) -> int:
        """The smallest tick sequence whose point the stream still needs, given a cursor."""
        if self.raw:
            return after + 1
        return bucket_start(after, self.width_ms) + self.width_ms


def parse(
    request: timeseries_pb2.SubscribeRequest,
    *,
    known: Collection[str],
    history: History,
    retention_ms: int,
    now: int,
    published: PublishedStore | None = None,
) -> Query:
    """Check ``request`` against the catalogue and the history; raise :class:`InvalidArgument`.

    ``known`` are the synthetic series (their points in ``history``); ``published`` the published ones.
    Fields are checked in a fixed order (series, resolution, start, then what the history holds), so a
    request with several faults always gets the same answer: the first field's.
    """
    names = _series(tuple(request.series), known, published)
    resolution, width = _resolution(request.resolution or "raw")
    synthetic = tuple(name for name in names if name in known)
    public = tuple(name for name in names if name not in known)
    start = request.WhichOneof("start")
    if start == "after_sequence":
        after = _after_sequence(request.after_sequence, now)
    elif start == "start_time":
        after = _start_time(request.start_time, width, retention_ms=retention_ms, now=now)
    else:
        after = _live(history.newest or now, width)
    starts: dict[str, int] = {}
    for name in public:
        timeline = published.timeline(name) if published is not None else None
        assert timeline is not None  # _series checked it exists
        starts[name] = after if start else timeline.live_after(WIDTHS.index(width) if width else None)
    query = Query(names, resolution, width, after, synthetic, public, starts)
    field_name = start or "start"
    if synthetic:
        _check_retained(query, history, field=field_name, cursor=after)
    for name in public:
        timeline = published.timeline(name) if published is not None else None
        assert timeline is not None
        _check_retained(query, timeline.history, field=field_name, cursor=starts[name])
    return query


def _series(names: tuple[str, ...], known: Collection[str], published: PublishedStore | None) -> tuple[str, ...]:
    """The requested series: at least one, at most :data:`MAX_SERIES`, no repeats, all in the catalogue."""
    if not names:
        raise InvalidArgument("series: name at least one series (see ListSeries)", field="series")
    if len(names) > MAX_SERIES:
        raise InvalidArgument(f"series: at most {MAX_SERIES} series per stream, got {len(names)}", field="series")
    if len(set(names)) != len(names):
        dupes = sorted({name for name in names if names.count(name) > 1})
        raise InvalidArgument(f"series: names must be unique; repeated: {_shown(dupes)}", field="series")
    unknown = [name for name in names if name not in known and (published is None or name not in published)]
    if unknown:
        offered = sorted(known) + (published.names() if published is not None else [])
        listed = ", ".join(offered[:20]) + (f" and {len(offered) - 20} more" if len(offered) > 20 else "")
        raise InvalidArgument(
            f"series: unknown series {_shown(unknown)}; known: {listed}",
            Reason.UNKNOWN_SERIES,
            field="series",
            series=",".join(unknown),
        )
    return names


def _resolution(resolution: str) -> tuple[str, int]:
    """The resolution and its bucket width in ms (0 for raw)."""
    if resolution not in RESOLUTIONS:
        raise InvalidArgument(
            f"resolution: unknown resolution {_shown([resolution])}; use one of {', '.join(RESOLUTIONS)}",
            Reason.UNKNOWN_RESOLUTION,
            field="resolution",
            resolutions=",".join(RESOLUTIONS),
        )
    return resolution, round(RESOLUTIONS[resolution] * 1000)


def _after_sequence(after: int, now: int) -> int:
    """A resume cursor: any sequence up to a little ahead of this clock (replicas' clocks differ)."""
    if after > now + FUTURE_TOLERANCE_MS:
        raise InvalidArgument(
            f"after_sequence: {after} is in the future (now is {now}, sequences are epoch ms)",
            Reason.START_IN_FUTURE,
            field="after_sequence",
            now=now,
        )
    return after


def _start_time(stamp: Timestamp, width: int, *, retention_ms: int, now: int) -> int:
    """The cursor for a start time within the retention window: from ``T`` (raw) or the bucket holding it."""
    start_ms = stamp.seconds * 1000 + stamp.nanos // 1_000_000
    if start_ms > now:
        raise InvalidArgument(
            f"start_time: {start_ms} ms is in the future (now is {now})",
            Reason.START_IN_FUTURE,
            field="start_time",
            now=now,
        )
    if start_ms < now - retention_ms:
        raise InvalidArgument(
            f"start_time: older than the retention window ({retention_ms} ms); "
            f"start at or after {now - retention_ms} (epoch ms)",
            Reason.HISTORY_NOT_RETAINED,
            field="start_time",
            retained_from=now - retention_ms,
        )
    return (bucket_start(start_ms, width) if width else start_ms) - 1


def _live(newest: int, width: int) -> int:
    """The cursor for live only: after the newest tick, or before the bucket open now."""
    return bucket_start(newest, width) - 1 if width else newest


def _check_retained(query: Query, history: History, *, field: str, cursor: int) -> None:
    """Refuse a start whose next point the history ring has already dropped: a resume is exact or an error."""
    if not history.holds_from(query.first_needed(cursor)):
        raise InvalidArgument(
            f"{field}: the points after it are no longer retained (history starts at sequence {history.oldest}); "
            "subscribe with a later start_time, or without a start for live points only",
            Reason.HISTORY_NOT_RETAINED,
            field=field,
            retained_from=history.oldest,
        )
