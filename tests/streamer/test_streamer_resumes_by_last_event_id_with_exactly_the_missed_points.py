"""Resume by Last-Event-ID: exactly the missed points, on the same streamer or on a fresh one."""

from __future__ import annotations

import asyncio

from services import Generator, Streamer, run_streamer
from sse import Event, assert_contiguous, seqs_by_series, sse

URL = "/v1/stream?series=cpu,latency&window=1s"


async def _read_some(url: str, count: int, headers: dict[str, str] | None = None) -> list[Event]:
    async with sse(url, headers) as reader:
        return [await reader.next() for _ in range(count)]


def _joined(first: list[Event], second: list[Event]) -> dict[str, list[int]]:
    before, after = seqs_by_series(first), seqs_by_series(second)
    return {name: before.get(name, []) + after.get(name, []) for name in before.keys() | after.keys()}


async def test_reconnect_with_last_event_id_gets_exactly_the_missed_points(streamer: Streamer) -> None:
    first = await _read_some(streamer.url + URL, 5)
    await asyncio.sleep(0.5)  # let points pass while disconnected: they must come back
    second = await _read_some(streamer.url + URL, 4, {"Last-Event-ID": first[-1].id or ""})
    snapshot = second[0]
    assert snapshot.event == "snapshot"
    assert snapshot.data["resumed"] is True and snapshot.data["reset"] is False
    assert len(snapshot.data["points"]) >= 2 * 5, "the points of the half second away"
    joined = _joined(first, second)
    assert joined.keys() == {"cpu", "latency"}
    for seqs in joined.values():
        assert_contiguous(seqs)


async def test_last_event_id_query_parameter_resumes_too(streamer: Streamer) -> None:
    first = await _read_some(streamer.url + URL, 3)
    second = await _read_some(f"{streamer.url}{URL}&lastEventId={first[-1].id}", 3)
    assert second[0].data["resumed"] is True
    for seqs in _joined(first, second).values():
        assert_contiguous(seqs)


async def test_a_fresh_streamer_refills_from_the_generator_and_resumes_without_gap(generator: Generator) -> None:
    # The second streamer keeps only 1s of history when it starts: the cursor is older than its ring,
    # so it must fetch the missing points from the generator (Subscribe after_sequence) first.
    async with run_streamer(generator.address) as one:
        first = await _read_some(one.url + URL, 4)
    await asyncio.sleep(1.5)
    async with run_streamer(generator.address, max_window="1s") as two:
        second = await _read_some(two.url + URL, 4, {"Last-Event-ID": first[-1].id or ""})
    assert second[0].data["resumed"] is True
    assert len(second[0].data["points"]) >= 2 * 25, "1.5 s of two series came from the refill"
    for seqs in _joined(first, second).values():
        assert_contiguous(seqs)
