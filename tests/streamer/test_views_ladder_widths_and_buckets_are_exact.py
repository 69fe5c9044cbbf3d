"""Views, pure: the ladder, how a width is chosen and changed, and the buckets the streamer builds."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pulsestream_streamer.core import cursor as cursors
from pulsestream_streamer.core import shape
from pulsestream_streamer.core.ladder import (
    GENERATOR_WIDTHS,
    LADDER_MS,
    MAX_POINTS,
    MIN_POINTS,
    View,
    choose,
    coarser,
    continuation,
    view_of,
    width_name,
)
from pulsestream_streamer.core.pieces import Part, Plan, SnapshotLost, State
from pulsestream_streamer.core.ring import Ring
from pulsestream_streamer.core.rollup import Roller, rollup, summarise
from pulsestream_streamer.core.samples import Sample

T0 = 1_795_732_200_000  # a round minute, epoch ms


def raw_ticks(values: list[float], period: int, start: int = T0) -> list[Sample]:
    """Contiguous raw ticks ``period`` ms apart, each linked to the one before."""
    return [
        Sample(start + i * period, start + (i - 1) * period if i else 0, start + i * period, v)
        for i, v in enumerate(values)
    ]


def brute_force(samples: list[Sample], width: int) -> dict[int, tuple[int, float, float, float, float]]:
    """Per bucket start: (count, min, max, first, last) computed the obvious way from raw ticks."""
    groups: dict[int, list[float]] = {}
    for s in samples:
        groups.setdefault(s.t - s.t % width, []).append(s.v)
    return {start: (len(vs), min(vs), max(vs), vs[0], vs[-1]) for start, vs in groups.items()}


values = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=400)


def test_the_ladder_is_1_2_5_then_clock_widths_each_dividing_an_hour() -> None:
    assert [width_name(w) for w in LADDER_MS] == (
        [
            "10ms",
            "20ms",
            "50ms",
            "100ms",
            "200ms",
            "500ms",
            "1s",
            "2s",
            "5s",
            "10s",
            "15s",
            "30s",
            "1m",
            "2m",
            "5m",
            "10m",
            "15m",
            "30m",
            "1h",
        ]
    )
    assert all(3_600_000 % w == 0 for w in LADDER_MS)
    assert list(LADDER_MS) == sorted(set(LADDER_MS))


def test_each_width_is_built_from_the_coarsest_generator_resolution_that_divides_it() -> None:
    sources = {width_name(w): view_of(w).source for w in LADDER_MS}
    assert sources["500ms"] == sources["10ms"] == "raw"
    assert sources["1s"] == sources["2s"] == "1s"
    assert sources["5s"] == sources["10s"] == sources["15s"] == sources["30s"] == "5s"
    assert sources["1m"] == sources["2m"] == sources["1h"] == "1m"
    assert [w for w in LADDER_MS if not view_of(w).built] == [1_000, 5_000, 60_000]


@given(
    resolution=st.sampled_from(list(GENERATOR_WIDTHS)),
    window_ms=st.integers(1_000, 24 * 3_600_000),
    max_points=st.integers(MIN_POINTS, MAX_POINTS),
    frequency_ms=st.sampled_from([10, 30, 100, 250, 1_000]),
)
def test_the_chosen_width_keeps_the_window_within_max_points(
    resolution: str, window_ms: int, max_points: int, frequency_ms: int
) -> None:
    view = choose(resolution, window_ms, max_points, frequency_ms)
    own = GENERATOR_WIDTHS[resolution]
    assert view.bucket_ms == own or view.bucket_ms in LADDER_MS
    assert view.bucket_ms >= own
    if view.bucket_ms != own:
        assert view.bucket_ms > (own or frequency_ms)
        # the smallest ladder width that keeps the window within N buckets (capped at the top rung)
        assert view.bucket_ms * max_points >= window_ms or view.bucket_ms == LADDER_MS[-1]
        smaller = [w for w in LADDER_MS if w < view.bucket_ms]
        assert not smaller or smaller[-1] * max_points < window_ms
    else:
        assert (own or frequency_ms) * max_points >= window_ms or choose(resolution, window_ms, None, 0) == view
    assert view.bucket_ms % (GENERATOR_WIDTHS[view.source] or 1) == 0


def test_nearby_requests_share_a_width() -> None:
    # Two charts 1,200 and 1,500 pixels wide on a 10-minute window at 10 ms: the same 500 ms view.
    assert choose("raw", 600_000, 1200, 10) == choose("raw", 600_000, 1500, 10) == View(500, "raw")
    assert choose("raw", 600_000, 1000, 10) == View(1_000, "1s"), "a generator width is read, not built"
    assert choose("raw", 3_600_000, 1000, 10) == View(5_000, "5s")
    assert choose("5s", 600_000, 1000, 10) == View(5_000, "5s"), "never finer than the resolution asked for"
    assert choose("raw", 60_000, 10_000, 100) == View(0, "raw"), "raw already holds fewer points"
    assert choose("raw", 600_000, None, 10) == View(0, "raw")


def test_a_degraded_view_is_at_least_ten_times_coarser_and_a_multiple() -> None:
    chain = [View(0, "raw")]
    while (nxt := coarser(chain[-1], 10)) is not None:
        chain.append(nxt)
    assert [v.name for v in chain] == ["raw", "100ms", "1s", "10s", "2m", "30m"]
    for view in LADDER_MS:
        target = coarser(view_of(view), 10)
        if target is not None:
            assert target.bucket_ms >= 10 * view and target.bucket_ms % view == 0
    assert coarser(View(0, "raw"), 250) == view_of(5_000)


@given(data=values, period=st.sampled_from([10, 30, 100, 250, 1000]), width=st.sampled_from(LADDER_MS[:12]))
def test_built_buckets_keep_the_true_min_and_max_of_every_bucket(data: list[float], period: int, width: int) -> None:
    ticks = raw_ticks(data, period)
    closed, roller = rollup(ticks, width)
    truth = brute_force(ticks, width)
    # Every bucket but the open last one is emitted, exactly.
    assert [b.seq for b in closed] == sorted(truth)[:-1]
    for bucket in closed:
        count, low, high, first, last = truth[bucket.seq]
        assert (bucket.n, bucket.min, bucket.max, bucket.first, bucket.last) == (count, low, high, first, last)
        assert bucket.t == bucket.seq and bucket.v == bucket.mean
        assert low <= bucket.mean <= high or math.isclose(bucket.mean, low) or math.isclose(bucket.mean, high)
    assert roller.start == max(truth)
    assert [b.prev for b in closed] == [0, *(b.seq for b in closed[:-1])][: len(closed)]


@given(data=values, cut=st.integers(0, 400), parts=st.lists(st.integers(1, 50), max_size=20))
def test_feeding_in_batches_gives_the_same_buckets_as_the_whole_history(
    data: list[float], cut: int, parts: list[int]
) -> None:
    ticks = raw_ticks(data, 10)
    whole, _ = rollup(ticks, 200)
    cut = min(cut, len(ticks))
    closed, roller = rollup(ticks[:cut], 200)
    rest = ticks[cut:]
    for size in [*parts, len(rest)]:
        closed += roller.take(rest[:size])
        rest = rest[size:]
    assert closed == whole


@given(
    data=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=300),
    width=st.sampled_from([2_000, 10_000]),
)
def test_buckets_built_from_generator_buckets_equal_buckets_built_from_ticks(data: list[float], width: int) -> None:
    ticks = raw_ticks(data, 100)
    seconds = summarise(ticks, 1_000)
    linked = [b._replace(prev=seconds[i - 1].seq if i else 0) for i, b in enumerate(seconds)]
    from_seconds, _ = rollup(linked, width)
    from_ticks, _ = rollup(ticks, width)
    assert len(from_seconds) == len(from_ticks)
    for a, b in zip(from_seconds, from_ticks, strict=True):
        assert (a.seq, a.n, a.min, a.max, a.first, a.last) == (b.seq, b.n, b.min, b.max, b.first, b.last)
        assert math.isclose(a.mean, b.mean, rel_tol=1e-9, abs_tol=1e-9)


def test_a_first_bucket_the_history_does_not_hold_whole_is_not_emitted() -> None:
    ticks = raw_ticks([float(i) for i in range(100)], 10, start=T0 - 50)  # starts 5 ticks into a bucket
    ticks[0] = ticks[0]._replace(prev=T0 - 60)  # ... and the tick before it exists (trimmed from the ring)
    closed, _ = rollup(ticks, 200)
    assert closed[0].seq == T0, "the bucket from T0-200 is partial and dropped"
    assert closed[0].prev == T0 - 200
    only_partial, roller = rollup(ticks[:3], 200)
    assert only_partial == []
    assert roller.take(ticks[3:30])[0].seq == T0, "the partial open bucket is skipped when it closes"


def covered(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge [start, end) spans in order; fail on overlap."""
    merged: list[tuple[int, int]] = []
    for start, end in points:
        if merged:
            assert start >= merged[-1][1], f"overlap at {start}"
            if start == merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
                continue
        merged.append((start, end))
    return merged


widths = st.sampled_from([0, *LADDER_MS[:13]])


@given(a=widths, b=widths, position=st.integers(1, 10_000))
def test_a_width_change_continues_with_no_gap_and_no_overlap(a: int, b: int, position: int) -> None:
    period = 10
    step_a = a or period
    p = T0 + position * step_a  # the last delivered point at width a (a tick, or a bucket start)
    plan = continuation(p, a, b)
    lined_up = not a or not b or a % b == 0 or b % a == 0
    if not lined_up:
        assert plan is None
        return
    assert plan is not None
    spans = [(p, p + step_a)]
    if plan.seam is not None:
        assert a == 0 or (plan.seam[1] - plan.seam[0]) % a == 0, "the seam is whole points of the old width"
        seam_first = plan.seam[0] + -plan.seam[0] % step_a  # raw: the first tick in the seam
        spans += [(t, t + step_a) for t in range(seam_first, plan.seam[1], step_a)]
    step_b = b or period
    first = plan.after + (b or 1)
    first += -first % step_b  # the next point of width b after `after`
    spans += [(first, first + step_b), (first + step_b, first + 2 * step_b)]
    assert len(covered(spans)) == 1, f"gap: {spans}"


@given(name=st.sampled_from([width_name(w) for w in LADDER_MS] + ["raw"]))
def test_cursors_of_built_views_round_trip(name: str) -> None:
    text = cursors.encode(name, {"cpu": T0, "memory": T0 - 500})
    decoded = cursors.decode(text)
    assert decoded.resolution == name
    assert decoded.positions == {"cpu": T0, "memory": T0 - 500}
    assert decoded.bucket_ms == (GENERATOR_WIDTHS.get(name) if name in GENERATOR_WIDTHS else cursors.WIDTHS[name])


def test_a_cursor_with_an_unknown_width_is_refused() -> None:
    import base64
    import zlib

    body = bytes([2, 7, 0, 0])  # version 2, width 7 ms (not on the ladder), no series, base 0
    text = base64.urlsafe_b64encode(body + zlib.crc32(body).to_bytes(4, "big")).rstrip(b"=").decode()
    with pytest.raises(cursors.CursorError):
        cursors.decode(text)


def test_roller_refuses_a_zero_width() -> None:
    with pytest.raises(ValueError):
        Roller(0)


def decode_blocks(body: bytes) -> list[dict[str, object]]:
    """d3-like rows from a ``format=columns`` body (what a client of the compact format does)."""
    import itertools as it

    out: list[dict[str, object]] = []
    for block in orjson.loads(body)["blocks"]:
        times = list(it.accumulate([block["t0"], *block["dt"]]))
        seqs = block.get("seq", times)
        for i, t in enumerate(times):
            row: dict[str, object] = {"series": block["series"], "t": t, "v": block["v"][i]}
            for key in ("min", "max", "count", "first", "last"):
                if key in block:
                    row[key] = block[key][i]
            if "count" in block:
                row["mean"] = block["v"][i]
            row["seq"] = seqs[i]
            out.append(row)
    return out


@given(data=values, width=st.sampled_from([0, 200, 1_000]))
def test_the_columns_format_carries_exactly_what_d3_rows_do(data: list[float], width: int) -> None:
    samples = raw_ticks(data, 10) if not width else summarise(raw_ticks(data, 10), width)
    view = width_name(width) if width else "raw"
    fragments = [
        shape.fragment("columns", "cpu", samples[:7], view),
        shape.fragment("columns", "cpu", samples[7:], view),
    ]
    compact = shape.points_body("columns", view, fragments, b"{}")
    rows = orjson.loads(shape.points_body("d3", view, [shape.fragment("d3", "cpu", samples, view)], b"{}"))["points"]
    assert decode_blocks(compact) == rows


def test_the_columns_format_is_over_three_times_smaller_for_dense_series() -> None:
    ticks = raw_ticks([round((i * 7919 % 1000) / 10, 4) for i in range(6_000)], 10)
    d3 = shape.fragment("d3", "cpu", ticks, "raw")
    compact = shape.fragment("columns", "cpu", ticks, "raw")
    assert len(d3) / len(compact) > 3, (len(d3), len(compact))


def _ring_of(count: int, capacity: int = 100_000) -> Ring:
    ring = Ring(capacity)
    ring.append(raw_ticks([float(i % 97) for i in range(count)], 10))
    return ring


@given(count=st.integers(0, 3_000), piece_bytes=st.integers(512, 40_000), keep=st.none() | st.integers(1, 500))
def test_a_snapshot_in_pieces_is_one_event_with_every_row_once(count: int, piece_bytes: int, keep: int | None) -> None:
    ring = _ring_of(count)
    upto = ring.last_seq
    after = ring.start_after(T0, upto, keep)
    head, tail = shape.snapshot_ends("d3", "raw", {"m": 1}, reset=False, resumed=False)
    plan = Plan(
        "d3", b"event: snapshot\ndata: " + head, [Part("cpu", ring, after, upto, "raw")], tail + b"\n\n", piece_bytes
    )
    pieces, state = [], State()
    while (step := plan.piece(state)) is not None:
        piece, state = step
        pieces.append(piece)
        assert len(piece) <= max(piece_bytes, 16 * 90) + len(plan.head) + len(tail) + 200
    event = b"".join(pieces)
    assert event == plan.encode() and event.endswith(b"\n\n") and event.count(b"\n") == 3
    rows = orjson.loads(event.split(b"data: ", 1)[1])["points"]
    expected = ring.since(T0)[-keep:] if keep else ring.since(T0)
    assert [row["seq"] for row in rows] == [s.seq for s in expected]


def test_a_snapshot_whose_rows_left_the_ring_is_lost_not_sent_with_a_hole() -> None:
    ring = _ring_of(2_000, capacity=2_000)
    plan = Plan("d3", b"", [Part("cpu", ring, ring.first_seq - 1, ring.last_seq, "raw")], b"", 2_048)
    piece, state = plan.piece(State()) or (b"", State())
    assert piece
    ring.append(raw_ticks([1.0] * 1_000, 10, start=ring.last_seq + 10))  # trims the oldest rows
    ring.append(raw_ticks([1.0] * 1_000, 10, start=ring.last_seq + 10))
    with pytest.raises(SnapshotLost):
        while (step := plan.piece(state)) is not None:
            state = step[1]


def test_readers_share_pieces_until_the_cache_is_cleared_then_go_on_alone() -> None:
    from pulsestream_streamer.fanout.snapshots import SnapshotReader, _Shared

    ring = _ring_of(3_000)
    plan = Plan("d3", b"[", [Part("cpu", ring, ring.first_seq - 1, ring.last_seq, "raw")], b"]", 4_096)
    shared = _Shared(plan)
    first, second = SnapshotReader(shared, {}), SnapshotReader(shared, {})
    a = [next(first) for _ in range(3)]
    b = [next(second) for _ in range(2)]
    assert all(x is y for x, y in zip(a, b, strict=False)), "the second reader gets the first one's bytes"
    shared.pieces = None  # the feed flushed: shared pieces are let go
    rest_a, rest_b = b"".join(first), b"".join(second)
    assert b"".join(a) + rest_a == b"".join(b) + rest_b == plan.encode()
