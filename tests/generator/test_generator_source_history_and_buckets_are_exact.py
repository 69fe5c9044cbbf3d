"""The pure parts, directly: source, ticks, history ring, aggregation, replay chunks."""

from __future__ import annotations

import math
from itertools import groupby

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pulsestream_generator.aggregation import aggregate, bucket_start, closed_by
from pulsestream_generator.clock import align_down, align_up, next_tick
from pulsestream_generator.history import History
from pulsestream_generator.replay import bucket_chunk, raw_chunk
from pulsestream_generator.source import SHAPES, Source, describe

T0 = 1_732_650_000_000  # a fixed instant (epoch ms), aligned to 1 minute


def test_two_sources_with_the_same_seed_give_identical_values() -> None:
    a, b = Source(7), Source(7)
    ticks = range(T0, T0 + 5_000, 10)
    for name in ("cpu", "memory", "requests", "latency", "anything-else"):
        assert a.values(name, ticks) == [b.value(name, t) for t in ticks]


def test_another_seed_gives_other_values() -> None:
    ticks = range(T0, T0 + 1_000, 100)
    assert Source(1).values("cpu", ticks) != Source(2).values("cpu", ticks)


@pytest.mark.parametrize("name", ["cpu", "memory", "requests", "latency", "disk", "queue-depth"])
def test_values_stay_within_the_expected_range_and_vary(name: str) -> None:
    info = describe(name)
    values = Source(42).values(name, range(T0, T0 + 600_000, 250))
    assert min(values) >= info.expected_min
    assert max(values) <= info.expected_max
    assert len(set(values)) > 100, "a series should move"


def test_catalogue_gives_known_series_units_and_other_names_a_stable_hashed_shape() -> None:
    assert [describe(n).unit for n in ("cpu", "memory", "requests", "latency")] == ["ratio", "MiB", "req/s", "ms"]
    assert {describe(n).shape for n in ("cpu", "memory", "requests", "latency")} == set(SHAPES)
    assert describe("disk") == describe("disk")
    assert describe("disk").shape in SHAPES
    assert len({describe(f"s{i}").shape for i in range(40)}) > 1, "unknown names should spread over shapes"


def test_ticks_align_to_wall_clock_multiples_and_a_new_period_starts_at_its_next_multiple() -> None:
    assert align_down(T0 + 1234, 100) == T0 + 1200
    assert align_up(T0 + 1234, 100) == T0 + 1300
    assert align_up(T0 + 1200, 100) == T0 + 1200
    # running late: the next tick after the last one, even if it is in the past (caught up)
    assert next_tick(T0, 100, T0 + 450, period_changed=False) == T0 + 100
    # a new period of 250 ms after a tick at T0+100: the next multiple of 250 at or after now
    assert next_tick(T0 + 100, 250, T0 + 130, period_changed=True) == T0 + 250
    assert next_tick(T0 + 100, 250, T0 + 990, period_changed=True) == T0 + 1000
    # the sequence always increases, even when the new period's multiple equals the last tick
    assert next_tick(T0 + 1000, 250, T0 + 1000, period_changed=True) == T0 + 1250


def test_history_trims_by_time_and_remembers_the_tick_before_the_oldest() -> None:
    history = History(["a"])
    history.backfill(range(T0, T0 + 1000, 100), {"a": [float(i) for i in range(10)]}, before=T0 - 100)
    assert (history.oldest, history.newest, len(history)) == (T0, T0 + 900, 10)
    assert history.before_oldest == T0 - 100
    assert history.previous(T0) == T0 - 100
    assert history.previous(T0 + 450) == T0 + 400
    history.append(T0 + 1000, {"a": 10.0})
    history.trim(T0 + 350)
    assert history.oldest == T0 + 400
    assert history.before_oldest == T0 + 300
    assert history.holds_from(T0 + 301)
    assert not history.holds_from(T0 + 300)
    with pytest.raises(ValueError, match="not after"):
        history.append(T0 + 1000, {"a": 0.0})


def test_history_compacts_its_arrays_so_memory_follows_the_retention() -> None:
    history = History(["a"])
    history.backfill([T0], {"a": [0.0]}, before=0)
    for i in range(1, 50_000):
        history.append(T0 + i * 10, {"a": float(i)})
        history.trim(T0 + i * 10 - 1000)  # keep ~100 ticks
    assert len(history) == 101
    assert len(history.ticks(0, history.end)) < 10_000, "dead prefix was never compacted"
    lo = history.index_after(T0 + 499_000)
    assert history.value_at("a", lo) == 49_901.0


def test_a_series_added_later_gets_values_for_every_held_tick() -> None:
    history = History(["a"])
    history.backfill(range(T0, T0 + 500, 100), {"a": [0.0] * 5}, before=0)
    history.trim(T0 + 200)
    history.add_series("b", lambda ticks: [float(t - T0) for t in ticks])
    lo, hi = history.begin, history.end
    assert list(history.values("b", lo, hi)) == [200.0, 300.0, 400.0]
    history.remove_series("a")
    assert history.series == ["b"]


@given(
    steps=st.lists(st.integers(min_value=1, max_value=3_000), min_size=1, max_size=300),
    width=st.sampled_from([1_000, 5_000, 60_000]),
    offset=st.integers(min_value=0, max_value=59_999),
)
def test_aggregate_matches_a_direct_computation_and_buckets_align(steps: list[int], width: int, offset: int) -> None:
    ticks = []
    t = T0 + offset
    for step in steps:
        t += step
        ticks.append(t)
    values = [math.sin(tick / 997) * 100 for tick in ticks]
    buckets = aggregate(ticks, values, width)
    expected = []
    for start, group in groupby(zip(ticks, values, strict=True), key=lambda pair: pair[0] // width * width):
        vals = [v for _, v in group]
        expected.append((start, len(vals), min(vals), max(vals), vals[0], vals[-1], sum(vals) / len(vals)))
    assert [(b.start, b.count, b.min, b.max, b.first, b.last) for b in buckets] == [e[:6] for e in expected]
    for bucket, direct in zip(buckets, expected, strict=True):
        assert bucket.mean == pytest.approx(direct[6], rel=1e-12, abs=1e-9)
        assert bucket.start % width == 0
        assert bucket.start <= T0 + offset + sum(steps)
    assert sum(b.count for b in buckets) == len(ticks)


def test_a_bucket_closes_when_the_first_tick_at_or_after_its_end_arrives() -> None:
    assert bucket_start(T0 + 1999, 1000) == T0 + 1000
    assert closed_by(T0 + 900, T0 + 950, 1000) is None
    assert closed_by(T0 + 900, T0 + 1000, 1000) == T0
    assert closed_by(T0 + 900, T0 + 7300, 1000) == T0  # the empty buckets between are not emitted
    assert closed_by(0, T0, 1000) is None


def _history(period: int, count: int, names: tuple[str, ...] = ("cpu", "memory")) -> History:
    source = Source(42)
    ticks = range(T0, T0 + period * count, period)
    history = History(names)
    history.backfill(ticks, {name: source.values(name, ticks) for name in names}, before=T0 - period)
    return history


def test_raw_replay_chunks_are_bounded_and_continue_exactly_from_the_cursor() -> None:
    history = _history(10, 1000)
    cursor, seen = T0 + 4_999, []
    while True:
        response, cursor = raw_chunk(history, ("cpu", "memory"), cursor, max_points=100)
        if response is None:
            break
        assert len(response.points) <= 100
        seen.extend(p for p in response.points if p.series == "cpu")
    assert [p.sequence for p in seen] == list(range(T0 + 5_000, T0 + 10_000, 10))
    assert seen[0].previous_sequence == T0 + 4_990
    assert cursor == T0 + 9_990


def test_bucket_replay_returns_only_closed_buckets_with_direct_statistics() -> None:
    history = _history(100, 125)  # ticks T0 .. T0+12.4s: buckets T0..T0+11s are closed, T0+12s is open
    response, cursor = bucket_chunk(history, ("cpu",), 1_000, T0 - 1)
    assert response is not None
    starts = [p.sequence for p in response.points]
    assert starts == list(range(T0, T0 + 12_000, 1_000))
    assert cursor == T0 + 11_000
    source = Source(42)
    for point in response.points:
        values = [source.value("cpu", t) for t in range(point.sequence, point.sequence + 1000, 100)]
        assert (point.count, point.min, point.max, point.first, point.last) == (
            10,
            min(values),
            max(values),
            values[0],
            values[-1],
        )
        assert point.mean == pytest.approx(sum(values) / 10) and point.value == point.mean
    assert response.points[1].previous_sequence == T0
    assert bucket_chunk(history, ("cpu",), 1_000, cursor) == (None, cursor)
