"""``python -m bench.producer``: one producer process for the ingest benchmark.

Modes (the result is one JSON line on stdout):

- ``flood``: as many points as the generator accepts, for ``--duration`` seconds, over
  ``--series-count`` series, through the library (``AsyncPublisher``, ``--batch-size`` points per
  request, one batch in flight), or with ``--pre-encoded`` requests built before the clock starts
  (what the generator alone can take, without the producer's own cost).
- ``steady``: one point every ``1/--rate`` seconds of one series, stamped on the period's
  wall-clock grid (so the load client checks continuity as for a synthetic series), sent at once
  (``linger=0``): what the publish -> browser latency is measured with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc

from pulsestream.publish import AsyncPublisher
from pulsestream.publish.publisher import encode
from pulsestream.v1 import ingest_pb2


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def flood_library(target: str, duration: float, series: int, batch_size: int) -> dict[str, float]:
    names = [f"flood.{i}" for i in range(series)]
    async with AsyncPublisher(target, batch_size=batch_size, linger=0.005, max_buffer=batch_size * 4) as publisher:
        started = time.perf_counter()
        deadline = started + duration
        t = now_ms() - 1000
        while time.perf_counter() < deadline:
            t += 1  # one point per series per millisecond of the series' own clock: never a duplicate
            for name in names:
                await publisher.put(name, 1.0, t)
        await publisher.flush(60)
        elapsed = time.perf_counter() - started
    return {"accepted": publisher.stats.accepted, "seconds": elapsed, "batches": publisher.stats.batches}


async def flood_pre_encoded(target: str, duration: float, series: int, batch_size: int) -> dict[str, float]:
    names = [f"flood.{i}" for i in range(series)]
    start = now_ms() - 5000
    per_series = max(1, batch_size // series)
    # Built before timing: enough for the whole run at 400,000 points/s (about 30 bytes a point).
    count = int(400_000 * duration / (per_series * series)) + 1
    requests = [
        encode(
            [(name, start + b * per_series + i, 1.0) for i in range(per_series) for name in names]
        ).SerializeToString()
        for b in range(count)
    ]
    async with grpc.aio.insecure_channel(target) as channel:
        publish = channel.unary_unary(
            "/pulsestream.v1.IngestService/Publish", response_deserializer=ingest_pb2.PublishResponse.FromString
        )
        accepted = 0
        started = time.perf_counter()
        deadline = started + duration
        for raw in requests:
            if time.perf_counter() >= deadline:
                break
            reply = await publish(raw, timeout=30)
            accepted += reply.accepted
        elapsed = time.perf_counter() - started
    return {"accepted": accepted, "seconds": elapsed, "batches": len(requests)}


async def steady(target: str, duration: float, series: str, rate: float) -> dict[str, float]:
    period = max(1, round(1000 / rate))
    async with AsyncPublisher(target, linger=0.0, batch_size=100) as publisher:
        tick = now_ms() // period * period + period
        end = time.monotonic() + duration
        sent = 0
        while time.monotonic() < end:
            delay = (tick - now_ms()) / 1000
            if delay > 0:
                await asyncio.sleep(delay)
            publisher.record(series, float(sent % 1000), tick)
            sent += 1
            tick += period
        await publisher.flush(30)
    return {"accepted": publisher.stats.accepted, "seconds": duration, "batches": publisher.stats.batches}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.producer")
    parser.add_argument("mode", choices=["flood", "steady"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--series", default="bench.published", help="steady: the series")
    parser.add_argument("--series-count", type=int, default=1000, help="flood: how many series")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=10.0, help="steady: points per second")
    parser.add_argument("--pre-encoded", action="store_true", help="flood: requests built before the clock starts")
    args = parser.parse_args()
    if args.mode == "steady":
        result = asyncio.run(steady(args.target, args.duration, args.series, args.rate))
    elif args.pre_encoded:
        result = asyncio.run(flood_pre_encoded(args.target, args.duration, args.series_count, args.batch_size))
    else:
        result = asyncio.run(flood_library(args.target, args.duration, args.series_count, args.batch_size))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
