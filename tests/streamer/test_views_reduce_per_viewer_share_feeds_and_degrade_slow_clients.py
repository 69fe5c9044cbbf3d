"""Views end to end: maxPoints reduces per viewer, nearby requests share a feed, slow clients are degraded.

Real generator (50 ms ticks), real streamer, real HTTP clients. The truth a reduced stream is checked
against is the raw stream of the same streamer: every bucket's min and max must be those of its ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket

import httpx
import pytest
from loopback import wait_until
from pulsestream_streamer.core import cursor
from services import FREQUENCY_MS, Generator, Streamer, run_streamer
from sse import Event, gaps_and_duplicates, parse, sse


def rows(event: Event) -> list[dict[str, object]]:
    return list(event.data["points"])


@pytest.mark.parametrize("value", ["9", "10001", "abc", "1.5", "-20", "1e3", "0x40"])
async def test_max_points_outside_10_to_10000_or_not_an_integer_gets_400_naming_it(
    streamer: Streamer, value: str
) -> None:
    async with httpx.AsyncClient() as client:
        reply = await client.get(streamer.url + "/v1/stream", params={"series": "cpu", "maxPoints": value})
    assert reply.status_code == 400
    assert reply.json()["error"]["parameter"] == "maxPoints"
    assert "10" in reply.json()["error"]["message"]


@pytest.mark.parametrize(("window", "max_points", "bucket"), [("30s", 100, 500), ("60s", 50, 2_000)])
async def test_a_reduced_snapshot_keeps_every_buckets_true_min_and_max_in_at_most_n_points(
    streamer: Streamer, window: str, max_points: int, bucket: int
) -> None:
    base = streamer.url + f"/v1/stream?series=cpu,latency&window={window}"
    await asyncio.sleep(0)
    async with sse(base + f"&maxPoints={max_points}") as reduced, sse(base) as raw:
        snapshot = await reduced.next()
        truth = await raw.next()
        meta = snapshot.data["meta"]
        assert meta["bucketMs"] == bucket and meta["maxPoints"] == max_points
        assert meta["fields"] == ["series", "t", "v", "min", "max", "mean", "count", "first", "last", "seq"]
        ticks: dict[str, dict[int, float]] = {}
        for row in rows(truth):
            ticks.setdefault(str(row["series"]), {})[int(row["seq"])] = float(row["v"])  # type: ignore[arg-type]
        checked = 0
        for series in ("cpu", "latency"):
            buckets = [row for row in rows(snapshot) if row["series"] == series]
            assert 0 < len(buckets) <= max_points
            seqs = [int(row["seq"]) for row in buckets]  # type: ignore[call-overload]
            assert not gaps_and_duplicates(seqs, bucket), "one bucket after another"
            for row in buckets:
                start = int(row["seq"])  # type: ignore[call-overload]
                inside = [v for t, v in ticks[series].items() if start <= t < start + bucket]
                if start < min(ticks[series]) or start + bucket > max(ticks[series]) + FREQUENCY_MS:
                    continue  # the raw window does not hold this bucket whole
                assert row["count"] == len(inside) == bucket // FREQUENCY_MS
                assert (row["min"], row["max"]) == (min(inside), max(inside)), f"{series} bucket {start}"
                assert (row["first"], row["last"]) == (inside[0], inside[-1])
                checked += 1
        assert checked >= 10
        # Live points arrive as buckets of the same width, continuing the snapshot.
        events = await reduced.until(lambda e: e.event == "points" and len(rows(e)) > 0, timeout=15)
        live = [row for row in rows(events[-1]) if row["series"] == "cpu"] or rows(events[-1])
        assert all(int(row["seq"]) % bucket == 0 and int(row["count"]) >= 1 for row in live)  # type: ignore[call-overload]


async def test_two_viewers_with_nearby_widths_share_one_feed_and_one_upstream(streamer: Streamer) -> None:
    base = streamer.url + "/v1/stream?series=cpu&window=10m"
    # 600,000 ms over 1,200 and over 1,500 points: 500 ms and 400 ms, both 500 ms on the ladder.
    async with sse(base + "&maxPoints=1200") as a, sse(base + "&maxPoints=1500") as b:
        first_a, first_b = await a.next(), await b.next()
        assert first_a.data["meta"]["bucketMs"] == first_b.data["meta"]["bucketMs"] == 500
        assert await streamer.metric("pulsestream_streamer_feeds") == 1
        assert await streamer.metric("pulsestream_streamer_built_views") == 1
        next_a = await a.until(lambda e: e.event == "points")
        next_b = await b.until(lambda e: e.id == next_a[-1].id)
        assert next_a[-1].raw == next_b[-1].raw, "one encoding for both"
        async with sse(base) as raw:
            await raw.next()
            assert await streamer.metric("pulsestream_streamer_feeds") == 2
            assert await streamer.metric("pulsestream_streamer_upstream_streams") == 1, "the view reads the raw topic"
    await wait_until(lambda: not streamer.state.hub.feeds, what="feeds released")
    assert await streamer.metric("pulsestream_streamer_feeds") == 0


async def test_a_reduced_stream_resumes_from_its_cursor_without_gap_or_duplicate(streamer: Streamer) -> None:
    url = streamer.url + "/v1/stream?series=cpu&window=30s&maxPoints=50"  # 600 ms -> 1 s (the generator's own)
    url2 = streamer.url + "/v1/stream?series=cpu&window=20s&maxPoints=50"  # 400 ms -> 500 ms, built
    for path, bucket in ((url, 1_000), (url2, 500)):
        async with sse(path) as reader:
            snapshot = await reader.next()
            seen = [int(row["seq"]) for row in rows(snapshot)]  # type: ignore[call-overload]
            events = await reader.until(lambda e: e.event == "points")
            seen += [int(row["seq"]) for row in rows(events[-1])]  # type: ignore[call-overload]
            last_id = events[-1].id
        assert last_id is not None and cursor.decode(last_id).bucket_ms == bucket
        await asyncio.sleep(2 * bucket / 1000)
        async with sse(path, headers={"Last-Event-ID": last_id}) as again:
            resumed = await again.next()
            assert resumed.data["resumed"] is True and resumed.data["reset"] is False
            seen += [int(row["seq"]) for row in rows(resumed)]  # type: ignore[call-overload]
            later = await again.until(lambda e: e.event == "points")
            seen += [int(row["seq"]) for e in later for row in rows(e)]  # type: ignore[call-overload]
        assert len(seen) > 1 and not gaps_and_duplicates(seen, bucket), f"{bucket} ms: {seen}"


def _slow_reader(port: int, path: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def _dechunk(body: bytes) -> bytes:
    """The payload of an HTTP/1.1 chunked body (as far as it arrived)."""
    out, pos = bytearray(), 0
    while (end := body.find(b"\r\n", pos)) >= 0:
        size = int(body[pos:end], 16)
        if end + 2 + size > len(body):
            break
        out += body[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2
    return bytes(out)


@pytest.mark.fault
async def test_a_slow_client_is_degraded_to_a_coarser_view_and_continues_without_gap(generator: Generator) -> None:
    async with run_streamer(
        generator.address,
        buffer_size="8",
        client_write_buffer="1024",
        socket_send_buffer="4096",
        flush_interval="20ms",
    ) as streamer:
        port = int(streamer.url.rsplit(":", 1)[1])
        sock = _slow_reader(port, "/v1/stream?series=cpu,memory,requests,latency&window=1s")
        try:
            await wait_until(
                lambda: streamer.metric("pulsestream_streamer_client_degradations_total", {"to": "500ms"}),
                timeout=30,
                what="a degradation",
            )
            assert await streamer.metric("pulsestream_streamer_sse_client_drops_total") == 0, "degraded, not cut"
            sock.setblocking(False)
            received = b""
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while loop.time() < deadline:
                tail = received.rsplit(b'"code":"degraded"', 1)
                if len(tail) == 2 and tail[1].count(b"event: points") >= 2:
                    break
                with contextlib.suppress(BlockingIOError):
                    chunk = sock.recv(65536)
                    assert chunk, "the stream ended"
                    received += chunk
                    continue
                await asyncio.sleep(0.02)
        finally:
            sock.close()
    events = parse(_dechunk(received.split(b"\r\n\r\n", 1)[1]))
    names = [event.event for event in events]
    notice_at = next(i for i, e in enumerate(events) if e.event == "notice" and e.data["code"] == "degraded")
    notice = events[notice_at].data
    assert notice["bucketMs"] == 500 and notice["message"], notice
    assert names[notice_at + 1] == "snapshot"
    resumed = events[notice_at + 1].data
    assert resumed["resumed"] is True and resumed["meta"]["bucketMs"] == 500  # type: ignore[index]
    for series in ("cpu", "memory", "requests", "latency"):
        before = [
            int(p["seq"])  # type: ignore[index, call-overload]
            for event in events[:notice_at]
            for p in event.data.get("points", [])
            if p["series"] == series
        ]
        after = [
            (int(p["seq"]), int(p["count"]))  # type: ignore[index, call-overload]
            for event in events[notice_at + 1 :]
            for p in event.data.get("points", [])
            if p["series"] == series
        ]
        assert before and after, series
        assert not gaps_and_duplicates(before, FREQUENCY_MS)
        # The seam: ticks of the old width up to the next 500 ms boundary, then 500 ms buckets.
        seam = [seq for seq, count in after if seq % 500]
        buckets = [seq for seq, count in after if seq % 500 == 0]
        assert all(count == 1 for seq, count in after if seq % 500), "seam ticks are one-point buckets"
        assert after[: len(seam)] == [(seq, 1) for seq in seam], "the seam comes first"
        covered = [(seq, seq + FREQUENCY_MS) for seq in [before[-1], *seam]] + [(seq, seq + 500) for seq in buckets]
        for (_, end), (start, _) in itertools.pairwise(covered):
            assert start == end, f"{series}: gap or overlap at {end} -> {start}"


async def test_the_compact_columns_format_streams_blocks_of_arrays(streamer: Streamer) -> None:
    url = streamer.url + "/v1/stream?series=cpu,memory&window=10s&format=columns&maxPoints=10"
    async with sse(url) as reader:
        snapshot = await reader.next()
        blocks = snapshot.data["blocks"]
        assert {block["series"] for block in blocks} == {"cpu", "memory"}
        assert snapshot.data["meta"]["bucketMs"] == 1_000
        for block in blocks:
            assert len(block["dt"]) == len(block["v"]) - 1 and set(block["dt"]) <= {1_000}
            assert len(block["min"]) == len(block["count"]) == len(block["v"]) <= 10
            assert "seq" not in block, "sequences are the times: not repeated"
        live = (await reader.until(lambda e: e.event == "points"))[-1]
        assert all(block["t0"] % 1_000 == 0 for block in live.data["blocks"])
