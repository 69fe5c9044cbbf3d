"""kill -9 of the generator while the producer library publishes: no acknowledged point lost, none twice.

A real generator with a write-ahead journal and a real streamer, from their console scripts; the library
publishes about 250 points a second from a thread while a browser's EventSource follows the series. The
generator is SIGKILLed, the library retries what was not acknowledged, the generator is started again on
its port and journal, and the SSE client must have got every recorded point exactly once, in order.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest
from loopback import wait_until
from services import MINUTE_WINDOWS, Stack
from sse import EventSource, following, now_ms

from pulsestream.publish import Publisher

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


async def test_kill_9_of_the_generator_mid_publish_loses_no_acknowledged_point_and_duplicates_none(
    stack: Stack, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    declared = json.dumps([{"name": "k9"}])
    generator = await stack.aio.generator(GENERATOR_INGEST_JOURNAL_DIR=str(journal), GENERATOR_PUBLISHED=declared)
    streamer = await stack.aio.streamer(generator, **MINUTE_WINDOWS)
    recorded: list[int] = []
    stop = threading.Event()
    publisher = Publisher(generator.address, linger=0.02, retry_base=0.05, retry_cap=0.3, timeout=2)

    def produce() -> None:
        last = 0
        while not stop.is_set():
            t = max(now_ms(), last + 1)
            publisher.record("k9", float(len(recorded)), t=t)
            recorded.append(t)
            last = t
            time.sleep(0.004)  # the producer's pace (~250 points/s), not a wait

    async with following(EventSource([streamer.url], "/v1/stream?series=k9&window=1m")) as [reader]:
        await reader.wait_for(lambda e: e.event == "snapshot", what="the snapshot")
        producer = threading.Thread(target=produce)
        producer.start()
        try:
            await wait_until(lambda: publisher.stats.accepted > 100, timeout=20, what="publishing under way")
            retries_before = publisher.stats.retries
            generator.kill()  # SIGKILL: no drain, nothing flushed by the process
            acknowledged_before = publisher.stats.acknowledged
            # Down until the library has met the outage: a batch failed and is being retried.
            await wait_until(lambda: publisher.stats.retries > retries_before, timeout=20, what="a failed batch")
            generator.start()  # same port, same journal
            await generator.aio.wait_ready()
            await wait_until(lambda: publisher.stats.acknowledged > acknowledged_before + 100, timeout=30,
                             what=f"publishing resumed\n{stack.report()}")  # fmt: skip
        finally:
            stop.set()
            producer.join()
        await asyncio.to_thread(publisher.close, 30)
        stats = publisher.stats
        assert stats.acknowledged == len(recorded) and stats.refused == stats.out_of_order == 0
        assert stats.retries >= 1, "the kill did not interrupt publishing"
        await wait_until(
            lambda: reader.seqs.get("k9", [])[-1:] == recorded[-1:],
            timeout=30,
            what=f"the last point\n{stack.report()}",
        )
    seqs = reader.seqs["k9"]
    assert len(seqs) == len(set(seqs)), "a point came twice"
    assert seqs == recorded, f"{len(set(recorded) - set(seqs))} acknowledged points lost"
    links = [p.get("prev") for p in reader.points("k9")]
    assert all(prev is None or prev in (0, *seqs) for prev in links)
    assert "published history recovered from the journal" in generator.log_text(start=2)
