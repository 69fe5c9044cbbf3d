"""OTLP metrics to published series: the mapping, as pure functions over the OTLP messages.

Any OpenTelemetry SDK or Collector exporting metrics over OTLP/gRPC to the
generator's port (``MetricsService/Export``) makes its metrics live series.
The messages are the ``opentelemetry-proto`` package's; nothing is copied.

Which series a data point goes to
    A metric's name is the series name (``checkout.latency``). A data point
    with attributes goes to ``NAME;key=value;key=value``, the attributes
    sorted by key (Graphite's tag syntax, deterministic whatever order the
    SDK sends them in), e.g. ``http.server.duration;method=GET;route=/cart``.
    Resource attributes listed in ``GENERATOR_INGEST_OTLP_RESOURCE_ATTRIBUTES``
    (say ``service.name``) join the data point's. Characters a series name
    may not hold (see :data:`pulsestream.spec.SERIES_NAME_PATTERN`; ``;``
    and ``=`` inside keys and values too) become ``_``; a name longer than
    128 characters keeps its first 119 and ends in ``~`` and 8 hex digits of
    a hash of the whole, so it stays unique. Every resulting name is usable
    as it is in ``/v1/stream?series=``. At most
    ``GENERATOR_INGEST_OTLP_MAX_SERIES_PER_METRIC`` attribute sets per metric
    become series; points of further ones are dropped and reported.

Which values
    - Gauges and sums (int or double): the value as exported (a cumulative
      sum is its running total, a delta sum the change in its interval).
    - Histograms, exponential histograms and summaries: two series per data
      point, ``NAME.count`` (observations in the interval) and ``NAME.mean``
      (their mean, when there were any and a sum was sent). A cumulative
      data point is turned into its interval by subtracting the previous
      export of the same series (a reset, seen as a new start time or a
      smaller count, starts over); the first export of a series covers the
      time since its start.
    - Timestamps: ``time_unix_nano``, to the millisecond; 0 means now. A data
      point flagged "no recorded value" is skipped.

Bad data points (a value that is not finite, a timestamp out of range, a
synthetic series' name, no room for another series) are dropped one by one
and counted in the response's ``partial_success`` with the first reason, as
OTLP asks of a receiver (an export is never refused for its data).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from pulsestream.spec import MAX_SERIES_NAME_LENGTH
from pulsestream_generator.publishing import Batch, Rules, SeriesPoints

__all__ = ["Conversion", "OtlpNames", "attribute_text", "convert", "series_name"]

_OUTSIDE_NAME = re.compile(r"[^A-Za-z0-9_.:/~-]")
_NO_VALUE = metrics_pb2.DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_HASHED = 8
#: Most cumulative histogram states remembered (one per series); the least recently exported go first.
MAX_CUMULATIVE = 100_000


def _clean(text: str) -> str:
    return _OUTSIDE_NAME.sub("_", text)


def attribute_text(value: common_pb2.AnyValue) -> str:
    """An attribute value as text: strings as they are, numbers and booleans as OTLP's JSON would write them."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    if kind == "array_value":
        return "|".join(attribute_text(item) for item in value.array_value.values)
    if kind == "kvlist_value":
        return "|".join(f"{item.key}:{attribute_text(item.value)}" for item in value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return ""


def series_name(metric: str, attributes: Iterable[tuple[str, str]] = ()) -> str:
    """The series for ``metric`` with ``attributes`` (key, value text): see the module docstring."""
    base = _clean(metric) or "metric"
    if not base[0].isalpha() or not base[0].isascii():
        base = "m" + base
    tags = sorted((_clean(key), _clean(value)) for key, value in attributes)
    name = base + "".join(f";{key}={value}" for key, value in tags)
    if len(name) <= MAX_SERIES_NAME_LENGTH:
        return name
    digest = hashlib.blake2b(name.encode(), digest_size=_HASHED // 2).hexdigest()
    return f"{name[: MAX_SERIES_NAME_LENGTH - _HASHED - 1]}~{digest}"


class OtlpNames:
    """Series created per metric (the cardinality cap) and the last cumulative state per series."""

    def __init__(self, per_metric: int) -> None:
        self.per_metric = per_metric
        self._by_metric: dict[str, set[str]] = {}
        #: series -> (start_time_unix_nano, count, sum) of the last cumulative export
        self.cumulative: dict[str, tuple[int, int, float]] = {}

    def admit(self, metric: str, name: str, exists: Callable[[str], bool], pending: Collection[str] = ()) -> bool:
        """Whether ``name`` may hold points of ``metric`` (already one of its series, or room for one more).

        At the cap, series that no longer exist (expired) are forgotten first; ``pending`` are those the
        export being converted creates, which do not exist yet.
        """
        names = self._by_metric.setdefault(metric, set())
        if name in names:
            return True
        if len(names) >= self.per_metric:
            names.intersection_update([n for n in names if exists(n) or n in pending])
            self.cumulative = {n: state for n, state in self.cumulative.items() if exists(n) or n in pending}
            if len(names) >= self.per_metric:
                return False
        names.add(name)
        return True


@dataclass
class Conversion:
    """An export turned into a batch, the metadata of its series, and what was dropped."""

    batch: Batch = field(default_factory=dict)
    #: series -> (unit, description), from the metric
    meta: dict[str, tuple[str, str]] = field(default_factory=dict)
    rejected: int = 0
    error: str = ""

    def reject(self, message: str) -> None:
        self.rejected += 1
        if not self.error:
            self.error = message


@dataclass(frozen=True, slots=True)
class _Point:
    name: str
    value: float
    t: int | None


def _ms(nanos: int) -> int | None:
    return nanos // 1_000_000 if nanos else None


def _attributes(points_attributes: Sequence[common_pb2.KeyValue]) -> list[tuple[str, str]]:
    return [(item.key, attribute_text(item.value)) for item in points_attributes]


class _Converter:
    """One export's conversion (state: the conversion so far, the rules, the names)."""

    def __init__(self, rules: Rules, names: OtlpNames, resource_keys: Sequence[str]) -> None:
        self.rules = rules
        self.names = names
        self.resource_keys = frozenset(resource_keys)
        self.out = Conversion()
        self.created = 0

    def add(self, metric: metrics_pb2.Metric, resource: list[tuple[str, str]]) -> None:
        kind = metric.WhichOneof("data")
        unit, description = metric.unit, metric.description
        if kind in ("gauge", "sum"):
            numbers = metric.gauge.data_points if kind == "gauge" else metric.sum.data_points
            for number in numbers:
                if number.flags & _NO_VALUE:
                    continue
                which = number.WhichOneof("value")
                if which is None:
                    self.out.reject(f"{metric.name}: a data point without a value")
                    continue
                value = float(number.as_double if which == "as_double" else number.as_int)
                name = series_name(metric.name, [*resource, *_attributes(number.attributes)])
                self._point(metric.name, _Point(name, value, _ms(number.time_unix_nano)), unit, description)
        elif kind in ("histogram", "exponential_histogram", "summary"):
            self._distribution(metric, kind, resource)

    def _distribution(self, metric: metrics_pb2.Metric, kind: str, resource: list[tuple[str, str]]) -> None:
        data = getattr(metric, kind)
        cumulative = kind == "summary" or data.aggregation_temporality == _CUMULATIVE
        for point in data.data_points:
            if point.flags & _NO_VALUE:
                continue
            attributes = [*resource, *_attributes(point.attributes)]
            base = series_name(metric.name, attributes)
            has_sum = kind == "summary" or point.HasField("sum")
            count, total = int(point.count), (float(point.sum) if has_sum else None)
            if cumulative:
                count, total = self._interval(base, point.start_time_unix_nano, count, total)
            t = _ms(point.time_unix_nano)
            counted = series_name(metric.name + ".count", attributes)
            self._point(metric.name, _Point(counted, float(count), t), "1", f"Observations of {metric.name} per export")
            if count and total is not None:
                mean = series_name(metric.name + ".mean", attributes)
                self._point(metric.name, _Point(mean, total / count, t), metric.unit, f"Mean of {metric.name}")

    def _interval(self, base: str, start: int, count: int, total: float | None) -> tuple[int, float | None]:
        """A cumulative (count, sum) as the interval since the last export of the same series."""
        cumulative = self.names.cumulative
        previous = cumulative.pop(base, None)  # re-inserted last: the dict's order is least recently exported first
        cumulative[base] = (start, count, total or 0.0)
        if len(cumulative) > MAX_CUMULATIVE:
            for stale in list(cumulative)[: len(cumulative) // 2]:  # forgotten: its next export counts since start
                del cumulative[stale]
        if previous is None or previous[0] != start or count < previous[1]:
            return count, total  # first export, or a reset: everything since the start
        return count - previous[1], (None if total is None else total - previous[2])

    def _point(self, metric: str, point: _Point, unit: str, description: str) -> None:
        rules, out = self.rules, self.out
        problem = rules.name_problem(point.name) or rules.value_problem(point.value, point.t)
        if problem is not None:
            out.reject(f"{point.name}: {problem.message}")
            return
        part = out.batch.get(point.name)
        if part is None:
            if not rules.exists(point.name):
                if self.created >= rules.room:
                    out.reject(f"{point.name}: no room for another published series (GENERATOR_INGEST_MAX_SERIES)")
                    return
                if not self.names.admit(metric, point.name, rules.exists, out.batch):
                    out.reject(
                        f"{point.name}: {metric} has {self.names.per_metric} series already "
                        "(GENERATOR_INGEST_OTLP_MAX_SERIES_PER_METRIC)"
                    )
                    return
                self.created += 1
            part = out.batch[point.name] = SeriesPoints()
            out.meta[point.name] = (unit, description)
        if point.t is None:
            part.untimed.append(point.value)
        else:
            part.times.append(point.t)
            part.values.append(point.value)


def convert(
    request: metrics_service_pb2.ExportMetricsServiceRequest,
    rules: Rules,
    names: OtlpNames,
    resource_keys: Sequence[str] = (),
) -> Conversion:
    """The batch an export holds (see the module docstring for the mapping)."""
    converter = _Converter(rules, names, resource_keys)
    for resource_metrics in request.resource_metrics:
        resource = [
            (item.key, attribute_text(item.value))
            for item in resource_metrics.resource.attributes
            if item.key in converter.resource_keys
        ]
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                converter.add(metric, resource)
    return converter.out
