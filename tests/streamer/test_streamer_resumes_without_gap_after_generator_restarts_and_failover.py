"""Generator restarts and replicas: a notice event while it is down, then no gap and no duplicate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from loopback import free_port, wait_until
from services import Generator, run_streamer
from sse import Event, assert_contiguous, seqs_by_series, sse

pytestmark = pytest.mark.fault


async def test_generator_killed_and_restarted_mid_stream_resumes_without_gap(tmp_path: Path) -> None:
    generator = Generator(free_port(), tmp_path / "generator.log").start().wait_ready()
    try:
        async with (
            run_streamer(generator.address) as streamer,
            sse(streamer.url + "/v1/stream?series=cpu,memory&window=1s") as reader,
        ):
            events: list[Event] = [await reader.next() for _ in range(4)]
            generator.kill()
            events += await reader.until(lambda e: e.event == "notice", timeout=20)
            error = events[-1]
            assert error.data["code"] == "upstream_unavailable" and error.data["message"]
            assert error.id is None, "a notice event does not move the cursor"
            await wait_until(
                lambda: streamer.state.hub.topics[("cpu", "raw")].up is False, what="the topic to notice the outage"
            )
            await asyncio.sleep(0.5)  # the generator stays down for a while; points keep being "produced"
            generator.start()
            await generator.aio.wait_ready()
            # Points resume; read until both series have moved well past the outage.
            last = max(max(s) for s in seqs_by_series(events).values())
            events += await reader.until(
                lambda e: e.event == "points" and min(p["seq"] for p in e.data["points"]) > last + 2000, timeout=30
            )
            assert await streamer.metric("pulsestream_streamer_upstream_reconnects_total") >= 2
    finally:
        generator.stop()
    by_series = seqs_by_series(events)
    assert by_series.keys() == {"cpu", "memory"}
    for seqs in by_series.values():
        assert_contiguous(seqs)


async def test_streamer_fails_over_to_the_next_generator_replica(tmp_path: Path) -> None:
    one = Generator(free_port(), tmp_path / "one.log")
    two = Generator(free_port(), tmp_path / "two.log")
    for replica in (one, two):
        replica.start()
    for replica in (one, two):
        replica.wait_ready()
    try:
        async with (
            run_streamer(f"{one.address},{two.address}") as streamer,
            sse(streamer.url + "/v1/stream?series=latency&window=1s") as reader,
        ):
            events = [await reader.next() for _ in range(3)]
            one.kill()
            events += await reader.until(lambda e: e.event == "notice", timeout=20)
            last = max(seqs_by_series(events)["latency"])
            events += await reader.until(lambda e: e.event == "points" and e.data["points"][-1]["seq"] > last + 1000)
            assert streamer.state.upstream.address == two.address
    finally:
        one.stop()
        two.stop()
    assert_contiguous(seqs_by_series(events)["latency"])
