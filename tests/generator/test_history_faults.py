"""Shared history in Redis through every fault, end to end: producer -> generators -> streamer -> SSE clients.

Real processes on loopback: a ``redis-server`` (started here), ``pulsestream-generator`` replicas
with ``GENERATOR_HISTORY_URL``, a ``pulsestream-streamer`` following them
(``STREAMER_GENERATOR_ADDRESS=a,b``), a producer through ``pulsestream.publish`` and SSE clients that
reconnect with ``Last-Event-ID``. Each test counts, per series, the points every client got against
the points the producer recorded: none lost, none twice, in order. Rates and retention are small so
the whole file stays within a few seconds per fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from ingest_stack import SseReader, Stack
from loopback import free_port, wait_until
from redisserver import RedisServer

from pulsestream.publish import Publisher

DECLARED = json.dumps([{"name": "ha.orders"}])


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Producer:
    """Records points of one series at about ``rate`` per second from a thread, each with its own timestamp."""

    def __init__(self, publisher: Publisher, series: str, rate: float = 200.0) -> None:
        self.publisher = publisher
        self.series = series
        self.period = 1.0 / rate
        self.recorded: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"producer-{series}")

    def _run(self) -> None:
        last = 0
        while not self._stop.is_set():
            t = max(now_ms(), last + 1)
            self.publisher.record(self.series, float(len(self.recorded)), t=t)
            self.recorded.append(t)
            last = t
            time.sleep(self.period)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def publisher(target: str, **options: object) -> Publisher:
    # round_robin: batches go to every replica of the target list, and skip one that is down.
    return Publisher(
        target,
        linger=0.02,
        retry_base=0.05,
        retry_cap=0.3,
        timeout=2,
        channel_options=[("grpc.lb_policy_name", "round_robin")],
        **options,  # type: ignore[arg-type]
    )


def assert_exactly(readers: list[SseReader], series: str, recorded: list[int]) -> None:
    for reader in readers:
        seqs = reader.seqs(series)
        assert len(seqs) == len(set(seqs)), f"{len(seqs) - len(set(seqs))} points came twice"
        assert seqs == recorded, f"{len(set(recorded) - set(seqs))} of {len(recorded)} recorded points lost"


@contextlib.asynccontextmanager
async def ha_stack(directory: Path, redis: RedisServer, replicas: int, **env: str) -> AsyncIterator[Stack]:
    """``replicas`` generators sharing ``redis`` and one streamer following all of them."""
    stack = Stack(directory, {"GENERATOR_HISTORY_URL": redis.url, "GENERATOR_PUBLISHED": DECLARED, **env})
    ports = [stack.gport] + [free_port() for _ in range(replicas - 1)]
    try:
        for port in ports:
            await stack.start_generator(port)
        await stack.start_streamer(",".join(f"127.0.0.1:{port}" for port in ports))
        stack.ports = ports  # type: ignore[attr-defined]
        yield stack
    finally:
        await asyncio.to_thread(stack.stop)


def targets(stack: Stack) -> str:
    return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in stack.ports)  # type: ignore[attr-defined]


async def test_kill_9_of_one_of_two_replicas_while_publishing_and_streaming_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path / "redis") as redis:
        async with ha_stack(tmp_path, redis, replicas=2) as stack:
            url = f"{stack.base}/v1/stream?series=ha.orders&window=1m"
            async with SseReader(url) as first, SseReader(url) as second:
                await wait_until(lambda: "snapshot" in first.events and "snapshot" in second.events, timeout=20)
                pub = publisher(targets(stack))
                with Producer(pub, "ha.orders") as producer:
                    await wait_until(lambda: pub.stats.accepted > 150, timeout=20, what="publishing under way")
                    stack.services[0].kill()  # the first replica: the streamer's upstream, and half the batches
                    killed_at = pub.stats.acknowledged
                    await wait_until(
                        lambda: pub.stats.acknowledged > killed_at + 300,
                        timeout=30,
                        what=f"publishing on\n{stack.logs()}",
                    )
                await asyncio.to_thread(pub.close, 30)
                recorded = producer.recorded
                assert pub.stats.acknowledged == len(recorded) and pub.stats.refused == pub.stats.out_of_order == 0
                await wait_until(
                    lambda: first.seqs("ha.orders")[-1:] == second.seqs("ha.orders")[-1:] == recorded[-1:],
                    timeout=30,
                    what=f"the last point at both clients\n{stack.logs()}",
                )
            assert_exactly([first, second], "ha.orders", recorded)
            assert "upstream failover" in stack.services[-1].log.read_text(), "the streamer never moved to b"


async def test_redis_killed_and_restarted_with_append_only_persistence_while_publishing_loses_nothing(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path / "redis", appendonly=True) as redis:
        async with ha_stack(tmp_path, redis, replicas=1, GENERATOR_HISTORY_TIMEOUT="500ms") as stack:
            async with SseReader(f"{stack.base}/v1/stream?series=ha.orders&window=1m") as reader:
                await wait_until(lambda: "snapshot" in reader.events, timeout=20)
                pub = publisher(stack.address)
                with Producer(pub, "ha.orders") as producer:
                    await wait_until(lambda: pub.stats.accepted > 150, timeout=20, what="publishing under way")
                    redis.kill()  # SIGKILL: what comes back is what the append-only file holds
                    acknowledged = pub.stats.acknowledged
                    await asyncio.sleep(0.7)
                    assert pub.stats.acknowledged <= acknowledged + 200  # (one batch could be answered meanwhile)
                    redis.start()  # same port, same directory: the append-only file is replayed
                    await wait_until(
                        lambda: pub.stats.acknowledged > acknowledged + 300,
                        timeout=30,
                        what=f"publishing resumed\n{stack.logs()}\n{redis.tail()}",
                    )
                await asyncio.to_thread(pub.close, 30)
                recorded = producer.recorded
                assert pub.stats.retries >= 1, "the restart did not interrupt publishing"
                assert pub.stats.acknowledged == len(recorded) and pub.stats.refused == 0
                await wait_until(
                    lambda: reader.seqs("ha.orders")[-1:] == recorded[-1:], timeout=30, what="the last point"
                )
            assert_exactly([reader], "ha.orders", recorded)
            client = aioredis.Redis(port=redis.port)
            stored = await client.xlen("{pulsestream}:p:ha.orders")
            await client.aclose()
            assert stored >= len(recorded)  # every acknowledged point survived the kill (seal entries aside)


async def test_a_generator_that_starts_after_points_were_published_replays_them(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as redis:
        stack = Stack(tmp_path, {"GENERATOR_HISTORY_URL": redis.url})
        try:
            await stack.start_generator()
            with Publisher(stack.address, linger=0.02) as pub:
                t0 = now_ms() - 20_000
                early = [t0 + 10 * i for i in range(300)]
                for i, t in enumerate(early):
                    pub.record("late.joiner", float(i), t=t)
                pub.flush(10)
                late_port = free_port()
                await stack.start_generator(late_port)  # knew nothing of them
                await stack.start_streamer(f"127.0.0.1:{late_port}")
                async with SseReader(f"{stack.base}/v1/stream?series=late.joiner&window=1m") as reader:
                    await wait_until(lambda: "snapshot" in reader.events, timeout=20)
                    assert reader.seqs("late.joiner") == early  # the snapshot: everything, from Redis
                    live = [now_ms() + i for i in range(20)]
                    for i, t in enumerate(live):
                        pub.record("late.joiner", float(i), t=t)
                    pub.flush(10)
                    await wait_until(
                        lambda: reader.seqs("late.joiner")[-1:] == live[-1:], timeout=20, what="live points via b"
                    )
            assert_exactly([reader], "late.joiner", early + live)
        finally:
            await asyncio.to_thread(stack.stop)


def rss_kib(pid: int) -> int:
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert match
    return int(match.group(1))


async def test_a_slow_redis_slows_producers_with_ingest_busy_and_the_generator_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    with RedisServer(tmp_path / "redis") as redis:
        metrics_port = free_port()
        async with ha_stack(
            tmp_path, redis, replicas=1, GENERATOR_INGEST_MAX_IN_FLIGHT="2", GENERATOR_METRICS_PORT=str(metrics_port)
        ) as stack:
            generator = stack.services[0].proc
            assert generator is not None
            async with SseReader(f"{stack.base}/v1/stream?series=ha.orders&window=1m") as reader:
                await wait_until(lambda: "snapshot" in reader.events, timeout=20)
                # Four producers on four series, batches of 50 (a busy refusal has something to hold back).
                pubs = [publisher(stack.address, batch_size=50) for _ in range(4)]
                names = ["ha.orders", "ha.b", "ha.c", "ha.d"]
                producers = [Producer(pub, name, rate=300) for pub, name in zip(pubs, names, strict=True)]
                baseline = rss_kib(generator.pid)
                highest = baseline
                client = aioredis.Redis(port=redis.port, socket_timeout=None)
                with contextlib.ExitStack() as running:
                    for producer in producers:
                        running.enter_context(producer)
                    await wait_until(lambda: pubs[0].stats.accepted > 100, timeout=20, what="publishing under way")
                    for _ in range(8):  # Redis answers nothing for 250 ms, eight times over about 3 s
                        await client.execute_command("DEBUG", "SLEEP", "0.25")
                        highest = max(highest, rss_kib(generator.pid))
                        await asyncio.sleep(0.1)
                await client.aclose()
                for pub in pubs:
                    await asyncio.to_thread(pub.close, 30)
                busy = sum(pub.stats.retries for pub in pubs)
                recorded = producers[0].recorded
                await wait_until(lambda: reader.seqs("ha.orders")[-1:] == recorded[-1:], timeout=30, what="caught up")
            assert busy >= 1, "no producer was held back"
            scraped = await asyncio.to_thread(_scrape, metrics_port)
            assert re.search(r'ingest_requests_total\{code="RESOURCE_EXHAUSTED",rpc="Publish"\} [1-9]', scraped)
            assert highest - baseline < 40 * 1024, f"generator RSS grew {highest - baseline} KiB"
            for pub, producer in zip(pubs, producers, strict=True):
                assert pub.stats.acknowledged == len(producer.recorded)
            assert_exactly([reader], "ha.orders", recorded)


def _scrape(port: int) -> str:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


pytestmark = pytest.mark.timeout(180)
