"""Pure logic of the streamer, tested directly: ring, sequencing, shapes, SSE framing, cursors, backoff, clients."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestream_streamer.core import cursor as cursors
from pulsestream_streamer.core import shape, sse
from pulsestream_streamer.core.backoff import Backoff
from pulsestream_streamer.core.catalogue import SeriesInfo
from pulsestream_streamer.core.ring import Ring
from pulsestream_streamer.core.samples import Sample
from pulsestream_streamer.core.sequencing import Sequencer
from pulsestream_streamer.fanout.clients import ClientLimits, Registry


def run(first: int, count: int, step: int = 10, prev: int | None = None) -> list[Sample]:
    """``count`` contiguous raw samples starting at sequence ``first``."""
    out = []
    before = first - step if prev is None else prev
    for i in range(count):
        seq = first + i * step
        out.append(Sample(seq, before, seq, float(i)))
        before = seq
    return out


# --- ring -----------------------------------------------------------------------------------------


def test_ring_serves_points_after_a_sequence_and_since_a_time() -> None:
    ring = Ring(100)
    ring.append(run(1000, 10))
    assert ring.first_seq == 1000 and ring.last_seq == 1090
    assert [s.seq for s in ring.after(1040)] == [1050, 1060, 1070, 1080, 1090]
    assert [s.seq for s in ring.after(1040, upto=1060)] == [1050, 1060]
    assert [s.seq for s in ring.since(1075)] == [1080, 1090]
    assert [s.seq for s in ring.since(0, upto=1010)] == [1000, 1010]


def test_ring_covers_exactly_the_cursors_it_can_resume() -> None:
    ring = Ring(100)
    assert not ring.covers(5)
    ring.append(run(1000, 5))
    assert ring.floor == 990, "the predecessor of the oldest point"
    assert ring.covers(990) and ring.covers(1020) and ring.covers(1040)
    assert not ring.covers(980), "points between 980 and 990 are not held"
    assert not ring.covers(1050), "ahead of the ring"


def test_ring_stays_bounded_and_keeps_the_newest() -> None:
    ring = Ring(100)
    for block in range(50):
        ring.append(run(block * 100 * 10, 100))
    assert len(ring) <= 125
    assert ring.last_seq == 49 * 1000 + 990
    assert [s.seq for s in ring.after(ring.floor or 0)] == [s.seq for s in ring.since(0)]


def test_ring_prepend_fills_older_points_up_to_capacity() -> None:
    ring = Ring(10)
    ring.append(run(1000, 4))
    added = ring.prepend(run(900, 14))
    assert added == 6
    assert ring.first_seq == 940 and ring.covers(930)
    assert [s.seq for s in ring.after(0)] == list(range(940, 1040, 10))


# --- sequencing -----------------------------------------------------------------------------------


def test_sequencer_drops_duplicates_and_passes_runs() -> None:
    seq = Sequencer()
    batch = run(100, 5)
    assert seq.offer_many(batch) == batch
    assert seq.offer_many(batch[2:]) == []
    assert seq.duplicates == 3
    assert seq.offer_many(run(150, 2)) == run(150, 2)


def test_sequencer_reorders_within_the_window_and_reports_a_gap_beyond() -> None:
    seq = Sequencer(window=3)
    points = run(100, 6)
    assert seq.offer(points[0]) == [points[0]]
    assert seq.offer(points[2]) == [] and seq.offer(points[3]) == []
    assert not seq.gap
    assert seq.offer(points[1]) == points[1:4]
    for point in run(200, 4, prev=190):
        seq.offer(point)
    assert seq.gap, "four points held, their predecessors never came"
    assert seq.last == 130
    seq.clear_held()
    assert not seq.gap


@given(st.lists(st.integers(min_value=0, max_value=39), max_size=120), st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_sequencer_output_is_strictly_increasing_and_contiguous(picks: list[int], rng: random.Random) -> None:
    """Whatever arrives (duplicates, local reorderings, a resubscribe replay), what comes out never jumps back."""
    points = run(1000, 40)
    arrivals = [points[i] for i in picks]
    for i in range(0, len(arrivals) - 1, 2):  # local swaps
        if rng.random() < 0.3:
            arrivals[i], arrivals[i + 1] = arrivals[i + 1], arrivals[i]
    seq = Sequencer(window=4)
    out: list[Sample] = []
    for point in arrivals:
        out.extend(seq.offer(point))
        if seq.gap:  # what the topic does: resubscribe after the last good point
            seq.clear_held()
            out.extend(seq.offer_many([p for p in points if p.seq > seq.last]))
    sequences = [s.seq for s in out]
    assert sequences == sorted(set(sequences))
    if out:
        assert sequences == list(range(sequences[0], sequences[-1] + 1, 10)), "no gap"


# --- shape ----------------------------------------------------------------------------------------

AGG = [Sample(60_000, 0, 60_000, 2.0, 1.0, 3.0, 2.0, 3, 1.0, 3.0)]


def test_d3_fragment_is_tidy_rows_with_epoch_ms() -> None:
    body = shape.points_body("d3", "raw", [shape.fragment("d3", "cpu", run(1700000000000, 2), "raw")], b"{}")
    data = orjson.loads(body)
    assert data["points"][0] == {"series": "cpu", "t": 1700000000000, "v": 0.0, "seq": 1700000000000}
    assert len(data["points"]) == 2 and data["meta"] == {}


def test_aggregated_rows_carry_bucket_statistics_in_both_formats() -> None:
    d3 = orjson.loads(shape.points_body("d3", "1m", [shape.fragment("d3", "cpu", AGG, "1m")], b"{}"))
    assert d3["points"][0] == {
        "series": "cpu",
        "t": 60_000,
        "v": 2.0,
        "min": 1.0,
        "max": 3.0,
        "mean": 2.0,
        "count": 3,
        "first": 1.0,
        "last": 3.0,
        "seq": 60_000,
    }
    table = orjson.loads(shape.points_body("table", "1m", [shape.fragment("table", "cpu", AGG, "1m")], b"{}"))
    assert table["columns"] == list(shape.AGGREGATE_COLUMNS)
    assert dict(zip(table["columns"], table["rows"][0], strict=True)) == d3["points"][0]


def test_fragments_of_several_series_join_into_one_valid_body() -> None:
    parts = [shape.fragment("table", name, run(10, 3), "raw") for name in ("a", "b")] + [b""]
    data = orjson.loads(shape.points_body("table", "raw", parts, shape.points_meta("table", "raw")))
    assert [row[0] for row in data["rows"]] == ["a"] * 3 + ["b"] * 3
    assert data["meta"] == {"resolution": "raw"}


def test_snapshot_meta_gives_axis_hints_and_flags() -> None:
    infos = [SeriesInfo("cpu", "ratio", "CPU", 0.0, 1.0), SeriesInfo("memory", "MiB", "mem", 0.0, 2048.0)]
    meta = shape.snapshot_meta("d3", "5s", infos, 60_000, 1_000_000)
    body = orjson.loads(shape.snapshot_body("d3", "5s", [], meta, reset=True, resumed=False))
    assert body["points"] == [] and body["reset"] is True and body["resumed"] is False
    assert body["meta"]["xDomain"] == [940_000, 1_000_000]
    assert body["meta"]["yDomain"] == [0.0, 2048.0]
    assert body["meta"]["units"] == {"cpu": "ratio", "memory": "MiB"}
    assert body["meta"]["bucketMs"] == 5000 and body["meta"]["fields"] == list(shape.AGGREGATE_COLUMNS)


# --- SSE framing ----------------------------------------------------------------------------------


def test_frames_follow_the_event_stream_format() -> None:
    assert sse.frame("points", b'{"a":1}', "abc") == b'event: points\nid: abc\ndata: {"a":1}\n\n'
    assert sse.frame(None, b"x\ny\r\nz") == b"data: x\ndata: y\ndata: z\n\n"
    # Wire change (issue 16): retry: is a field of an event's block, never a block of its own.
    assert sse.frame("snapshot", b"{}", "abc", retry_ms=2000) == b"retry: 2000\nevent: snapshot\nid: abc\ndata: {}\n\n"
    assert sse.comment("a\nb") == b": a b\n\n"
    assert sse.HEARTBEAT.startswith(b":") and sse.HEARTBEAT.endswith(b"\n\n")
    # Wire change (issue 16): the server's notice event is named "notice", never "error".
    error = sse.notice_frame("slow_consumer", "too slow", series=["cpu"])
    assert error.startswith(b"event: notice\ndata: ") and b"id:" not in error
    assert orjson.loads(error.split(b"data: ")[1]) == {
        "code": "slow_consumer",
        "message": "too slow",
        "series": ["cpu"],
    }


# --- cursors --------------------------------------------------------------------------------------

positions = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True), st.integers(0, 2**63 - 1), min_size=1, max_size=16
)


@given(st.sampled_from(["raw", "1s", "5s", "1m"]), positions)
def test_cursor_round_trips(resolution: str, where: dict[str, int]) -> None:
    text = cursors.encode(resolution, where)
    assert text.isascii() and "=" not in text and "\n" not in text
    decoded = cursors.decode(text)
    assert decoded.resolution == resolution and dict(decoded.positions) == where


def test_cursor_is_compact() -> None:
    now = 1_732_650_000_000
    text = cursors.encode("raw", {"cpu": now, "memory": now, "requests": now, "latency": now - 100})
    assert len(text) < 64


@given(st.binary(max_size=64))
def test_garbage_is_never_taken_for_a_cursor(data: bytes) -> None:
    import base64

    text = base64.urlsafe_b64encode(data).decode().rstrip("=")
    with pytest.raises(cursors.CursorError):
        cursors.decode(text)


@given(positions, st.data())
def test_a_corrupted_cursor_is_detected(where: dict[str, int], data: st.DataObject) -> None:
    text = cursors.encode("raw", where)
    index = data.draw(st.integers(0, len(text) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    replacement = data.draw(st.sampled_from(alphabet).filter(lambda c: c != text[index]))
    corrupted = text[:index] + replacement + text[index + 1 :]
    try:
        decoded = cursors.decode(corrupted)
    except cursors.CursorError:
        return
    # The last character may carry only padding bits: then the bytes, and the cursor, are unchanged.
    assert dict(decoded.positions) == where


@pytest.mark.parametrize("text", ["", "!!!!", "AQ", "A" * 5000, cursors.encode("raw", {"cpu": 5})[:-3]])
def test_unreadable_cursors_raise(text: str) -> None:
    with pytest.raises(cursors.CursorError):
        cursors.decode(text)


# --- backoff --------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_under_a_cap() -> None:
    backoff = Backoff(0.1, 2.0, random.Random(7))
    delays = [backoff.next() for _ in range(12)]
    assert all(0.05 <= d <= 2.0 for d in delays)
    assert max(delays[:2]) <= 0.2 and max(delays[6:]) > 0.5
    assert len(set(delays)) == len(delays), "jittered"
    backoff.reset()
    assert backoff.next() <= 0.1


# --- clients --------------------------------------------------------------------------------------


async def test_a_client_over_its_queue_bound_is_dropped_with_a_slow_consumer_event() -> None:
    registry = Registry(ClientLimits(max_events=3, max_bytes=10_000))
    client = registry.open("127.0.0.1:5000")
    frame = b"data: x\n\n"
    for _ in range(3):
        client.push(frame)
    assert client.queued == 3 and not client.closing
    client.push(frame)
    assert client.closing and client.reason == "slow_consumer"
    assert client.queued == 1, "the backlog is released at once"
    last = await client.next_body()
    assert last is not None and b"slow_consumer" in last
    assert await client.next_body() is None
    client.push(frame)
    assert client.queued == 0, "nothing queues after the end"


async def test_a_client_over_its_byte_bound_is_dropped_too() -> None:
    registry = Registry(ClientLimits(max_events=1000, max_bytes=100))
    client = registry.open("127.0.0.1:5000")
    client.push(b"x" * 200)
    client.push(b"y")
    assert client.reason == "slow_consumer"


async def test_queued_frames_go_out_as_one_write() -> None:
    registry = Registry(ClientLimits())
    client = registry.open("127.0.0.1:5000")
    waiting = asyncio.ensure_future(client.next_body())
    await asyncio.sleep(0)
    client.push(b"a")
    client.push(b"b")
    assert await waiting == b"ab"


async def test_sweep_sends_heartbeats_to_idle_clients_and_ends_old_and_stalled_ones() -> None:
    registry = Registry(ClientLimits(heartbeat=15, stall_timeout=30, max_lifetime=100))
    idle, busy, old, stuck = (registry.open(f"10.0.0.{i}:1") for i in range(4))
    aborted: list[str] = []
    stuck.set_abort(lambda: aborted.append("stuck"))
    t0 = idle.connected_at
    busy.last_write = t0 + 10
    old.deadline = t0 + 5
    stuck.blocked_since = t0 + 1
    registry.sweep(t0 + 16, sse.HEARTBEAT, b"bye")
    assert idle.queued == 1 and busy.queued == 0
    assert old.closing and old.reason == "max_lifetime"
    assert not aborted
    registry.sweep(t0 + 32, sse.HEARTBEAT, b"bye")
    assert aborted == ["stuck"] and stuck.closing
    assert registry.streams_of("10.0.0.1") == 1
    for client in (idle, busy, old, stuck):
        registry.close(client)
    assert len(registry) == 0 and registry.streams_of("10.0.0.1") == 0


async def test_shutdown_finishes_every_client_after_its_queue() -> None:
    registry = Registry(ClientLimits())
    client = registry.open("127.0.0.1:1")
    client.push(b"points")
    registry.shutdown(b"bye")
    assert await client.next_body() == b"pointsbye"
    assert await client.next_body() is None


async def test_sweep_notices_a_peer_that_went_away_through_the_probe() -> None:
    registry = Registry(ClientLimits())
    client = registry.open("127.0.0.1:1")
    gone = False
    client.probe = lambda: gone
    waiting = asyncio.ensure_future(client.next_body())
    registry.sweep(client.connected_at + 0.5, sse.HEARTBEAT, b"bye")
    assert not client.gone
    gone = True
    registry.sweep(client.connected_at + 1.0, sse.HEARTBEAT, b"bye")
    assert client.gone and client.reason == "disconnect"
    assert await waiting is None, "the writer wakes up and ends"
