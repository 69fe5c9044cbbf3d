"""Published history, pure: timelines, the store's duplicate and out-of-order rules, the batch checks.

The property that matters most: buckets a live subscriber gets (closed by data or by the clock, at
publish time) are exactly the buckets a later replay computes, late points included, whatever the
arrival order of points and clock ticks.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestream_generator.aggregation import WIDTHS
from pulsestream_generator.publishedstore import MemoryStore
from pulsestream_generator.publishing import Batch, Refused, Rules, SeriesPoints, check_publish
from pulsestream_generator.timeline import Appended, Timeline, bucket_of

from pulsestream.refusals import Reason
from pulsestream.spec import PublishedSeries
from pulsestream.v1 import ingest_pb2

T0 = 1_800_000_000_000  # a whole minute: buckets of every width start here


def rules(**overrides: object) -> Rules:
    values: dict[str, object] = {
        "now": T0 + 60_000,
        "retention_ms": 600_000,
        "synthetic": frozenset({"cpu"}),
        "exists": lambda name: False,
        "room": 10,
        "max_series": 10,
    }
    values.update(overrides)
    return Rules(**values)  # type: ignore[arg-type]


def request(*points: tuple[str, float, int | None]) -> ingest_pb2.PublishRequest:
    out = ingest_pb2.PublishRequest()
    for series, value, t in points:
        point = out.points.add(series=series, value=value)
        if t is not None:
            point.timestamp.seconds, millis = divmod(t, 1000)
            point.timestamp.nanos = millis * 1_000_000
    return out


def store_with(*points: tuple[str, int, float], now: int = T0 + 60_000) -> tuple[MemoryStore, list[Appended]]:
    stored: list[Appended] = []
    store = MemoryStore(lambda timeline, appended: stored.append(appended))
    batch: Batch = {}
    for series, t, value in points:
        part = batch.setdefault(series, SeriesPoints())
        part.times.append(t)
        part.values.append(value)
    store.append_now(batch, now)
    return store, stored


# --- the store's rules ----------------------------------------------------------------------------


def test_a_repeated_series_and_timestamp_is_stored_once_and_counted_as_a_duplicate() -> None:
    store, _ = store_with(("orders", T0 + 100, 1.0), ("orders", T0 + 200, 2.0))
    batch: Batch = {"orders": SeriesPoints([T0 + 100, T0 + 200, T0 + 300], [9.0, 9.0, 3.0])}
    outcome = store.append_now(batch, T0 + 60_000)
    assert (outcome.accepted, outcome.duplicates, outcome.out_of_order) == (1, 2, 0)
    timeline = store.timeline("orders")
    assert timeline is not None
    history = timeline.history
    assert list(history.ticks(history.begin, history.end)) == [T0 + 100, T0 + 200, T0 + 300]
    assert list(history.values("orders", history.begin, history.end)) == [1.0, 2.0, 3.0]  # the first value stays


def test_an_older_point_that_was_never_stored_is_out_of_order_and_not_stored() -> None:
    store, _ = store_with(("orders", T0 + 100, 1.0), ("orders", T0 + 300, 3.0))
    outcome = store.append_now({"orders": SeriesPoints([T0 + 200, T0 + 400], [2.0, 4.0])}, T0 + 60_000)
    assert (outcome.accepted, outcome.duplicates, outcome.out_of_order) == (1, 0, 1)
    timeline = store.timeline("orders")
    assert timeline is not None and timeline.newest == T0 + 400


def test_points_of_a_batch_are_sorted_first_and_equal_ones_within_it_count_once() -> None:
    _store, stored = store_with(("orders", T0 + 300, 3.0), ("orders", T0 + 100, 1.0), ("orders", T0 + 300, 9.0))
    assert list(stored[0].times) == [T0 + 100, T0 + 300]
    assert list(stored[0].values) == [1.0, 3.0]
    assert stored[0].previous == 0


def test_untimed_points_are_stamped_now_and_always_after_the_newest() -> None:
    store, _ = store_with(("orders", T0 + 5_000, 1.0))
    outcome = store.append_now({"orders": SeriesPoints(untimed=[2.0, 3.0])}, T0 + 4_000)  # the clock is behind
    assert outcome.accepted == 2
    timeline = store.timeline("orders")
    assert timeline is not None
    history = timeline.history
    assert list(history.ticks(history.begin, history.end)) == [T0 + 5_000, T0 + 5_001, T0 + 5_002]


def test_declared_series_exist_empty_and_an_undeclared_empty_one_disappears_with_its_declaration() -> None:
    store = MemoryStore(lambda timeline, appended: None)
    store.declare([PublishedSeries(name="orders", unit="1/s", expectedRange=[0, 10]), PublishedSeries(name="b")])
    assert store.names() == ["orders", "b"] and "orders" in store
    assert store.meta("orders").unit == "1/s" and store.meta("orders").expected_max == 10
    store.append_now({"b": SeriesPoints([T0], [1.0])}, T0)
    assert store.declare([]) == ["orders"]  # b has a point: it stays, undeclared
    assert store.names() == ["b"] and not store.meta("b").declared


def test_undeclared_series_unwritten_for_the_retention_are_forgotten_unless_followed() -> None:
    store, _ = store_with(("old", T0, 1.0), ("kept", T0, 1.0), ("new", T0 + 50_000, 1.0))
    assert store.trim(T0 + 10_000, keep={"kept"}) == ["old"]
    assert store.names() == ["kept", "new"]


# --- batch checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "reason", "index", "field"),
    [
        ((("ok", 1.0, None), ("bad name", 1.0, None)), Reason.BAD_POINT, 1, "series"),
        ((("ok", 1.0, None), ("ok", math.nan, None)), Reason.BAD_POINT, 1, "value"),
        ((("ok", math.inf, None),), Reason.BAD_POINT, 0, "value"),
        ((("ok", 1.0, T0 + 60_000 + 61_000),), Reason.BAD_POINT, 0, "timestamp"),
        ((("ok", 1.0, T0 - 600_000),), Reason.BAD_POINT, 0, "timestamp"),
        ((("ok", 1.0, None), ("cpu", 1.0, None)), Reason.SYNTHETIC_SERIES, 1, None),
    ],
)
def test_a_bad_point_refuses_the_batch_naming_its_index_series_and_field(
    points: tuple[tuple[str, float, int | None], ...], reason: Reason, index: int, field: str | None
) -> None:
    with pytest.raises(Refused) as caught:
        check_publish(request(*points), rules())
    assert caught.value.reason is reason
    assert caught.value.metadata["index"] == index
    assert caught.value.metadata["series"] == points[index][0]
    assert caught.value.metadata["field"] == field
    assert f"points[{index}]" in str(caught.value)


def test_the_limits_of_a_batch_refuse_it_with_resource_exhausted_reasons() -> None:
    with pytest.raises(Refused) as caught:
        check_publish(request(*[("a", 1.0, None)] * 3), rules(max_points=2))
    assert caught.value.reason is Reason.TOO_MANY_POINTS and caught.value.metadata == {"max_points": 2}
    with pytest.raises(Refused) as caught:
        check_publish(request(("a", 1.0, None), ("b", 1.0, None), ("a", 2.0, None)), rules(room=1))
    assert caught.value.reason is Reason.TOO_MANY_SERIES and caught.value.metadata["index"] == 1
    with pytest.raises(Refused) as caught:
        check_publish(request(("a", 1.0, None)), rules(create_undeclared=False))
    assert caught.value.reason is Reason.UNDECLARED_SERIES
    batch = check_publish(request(("a", 1.0, None)), rules(create_undeclared=False, exists=lambda name: True))
    assert batch["a"].untimed == [1.0]


def test_series_names_take_otlp_names_and_graphite_tags_but_never_what_a_url_or_a_list_would_split() -> None:
    good = ["checkout.latency", "http.server/duration;method=GET;route=/x", "Orders_2", "a" * 128, "x~1:y"]
    for name in good:
        check_publish(request((name, 1.0, None)), rules())
    for name in ["", "9lives", "a,b", "a b", "a%20", "a&b", "a#b", "a?b", "é", "a" * 129]:
        with pytest.raises(Refused):
            check_publish(request((name, 1.0, None)), rules())


# --- buckets: live and replay agree -----------------------------------------------------------------


@dataclass
class Emitted:
    width: int
    start: int
    count: int
    mean: float
    first: float
    last: float
    previous: int


def _emit(timeline: Timeline, closed: list[object] | tuple[object, ...], log: list[Emitted]) -> None:
    for entry in closed:
        previous, buckets = bucket_of(timeline, entry)  # type: ignore[arg-type]
        for bucket in buckets:
            log.append(
                Emitted(
                    WIDTHS[entry.index], bucket.start, bucket.count, bucket.mean, bucket.first, bucket.last, previous
                )  # type: ignore[attr-defined]
            )
            previous = bucket.start


def _replayed(timeline: Timeline) -> list[Emitted]:
    log: list[Emitted] = []
    for index, width in enumerate(WIDTHS):
        after = 0
        while True:
            response, reached = timeline.bucket_chunk(index, after, max_points=3)
            if response is None:
                break
            log.extend(
                Emitted(width, p.sequence, p.count, p.mean, p.first, p.last, p.previous_sequence)
                for p in response.points
            )
            after = reached
    return log


steps = st.lists(
    st.one_of(
        st.tuples(st.just("points"), st.lists(st.integers(1, 4_000), min_size=1, max_size=6)),
        st.tuples(st.just("clock"), st.integers(0, 9_000)),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps, delay=st.sampled_from([0, 500, 2_000]))
def test_buckets_emitted_live_are_the_buckets_a_replay_computes_late_points_included(
    steps: list[tuple[str, object]], delay: int
) -> None:
    timeline = Timeline("s")
    live: list[Emitted] = []
    now = T0
    newest = T0
    value = 0.0
    for kind, argument in steps:
        if kind == "clock":
            now += int(argument)  # type: ignore[call-overload]
            _emit(timeline, timeline.seal(now, delay), live)
            continue
        times = []
        for gap in argument:  # type: ignore[union-attr]
            newest += gap
            times.append(newest)
        values = [value + i for i in range(len(times))]
        value += len(times)
        now = max(now, newest - 1_000)  # producers may run a little ahead of, or far behind, the clock
        _emit(timeline, list(timeline.append(times, values).closed), live)
    live.sort(key=lambda e: (e.width, e.start))
    replayed = sorted(_replayed(timeline), key=lambda e: (e.width, e.start))
    assert replayed == live
    for width in WIDTHS:
        starts = [e.start for e in live if e.width == width]
        assert starts == sorted(set(starts)), "a bucket was emitted twice"


def test_a_point_for_a_bucket_the_clock_closed_is_served_raw_but_left_out_of_that_bucket() -> None:
    timeline = Timeline("s")
    timeline.append([T0 + 100], [1.0])
    sealed = timeline.seal(T0 + 1_000 + 2_000, 2_000)  # the 1s bucket [T0, T0+1000) closes by the clock
    assert [(c.index, c.lo, c.hi) for c in sealed] == [(0, T0, T0 + 1_000)]
    timeline.append([T0 + 900, T0 + 1_500], [100.0, 2.0])  # 900 arrives late for the 1s bucket
    assert timeline.late == {T0 + 900: 0b001} and timeline.late_points == 1
    response, _ = timeline.raw_chunk(0)
    assert response is not None and [p.value for p in response.points] == [1.0, 100.0, 2.0]
    one_second = timeline.buckets(0, T0, T0 + 1_000)
    five_seconds = timeline.buckets(1, T0, T0 + 5_000)
    assert [(b.count, b.mean) for b in one_second] == [(1, 1.0)]
    assert [(b.count, b.max) for b in five_seconds] == [(3, 100.0)]  # still open at 5s: it counts there


def test_the_store_fans_each_run_out_once_per_series_with_its_link_to_the_point_before() -> None:
    store, stored = store_with(("a", T0 + 1, 1.0), ("b", T0 + 2, 2.0))
    asyncio.run(store.append({"a": SeriesPoints([T0 + 5], [5.0])}, T0 + 60_000))
    assert [(list(s.times), s.previous) for s in stored] == [([T0 + 1], 0), ([T0 + 2], 0), ([T0 + 5], T0 + 1)]
