"""``python -m bench --scenario views``: what per-viewer reduction (``maxPoints``) saves, side by side.

One generator at 10 ms with an hour of history and one streamer serve both
measurements, raw and reduced requests one after the other in the same run:

1. First draw of a 10-minute window (60,000 points per series): the snapshot's
   bytes, the time from the request to its last byte (what a chart waits for
   before it can draw) and the client's JSON parse time, for raw ``d3``,
   ``maxPoints=1000`` in ``d3`` and in ``columns``. Plus the snapshot encode time
   in-process, on the streamer's own code (a ring of 60,000 points).
2. Viewers of a 1-hour window: streamer CPU per viewer to join (snapshot) and
   to follow (10 s of live points), raw against ``maxPoints=1000``. A raw viewer
   of an hour at 10 ms gets a 24 MB snapshot, so raw runs with fewer viewers;
   the numbers compared are per viewer.

Clients here are plain asyncio connections that count bytes and find the end
of the snapshot event; every process is on 127.0.0.1 and stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from loopback import free_port
from services import Generator, Service, StreamerProcess

from bench.runner import BENCH_ENV
from bench.services import cpu_seconds

SERIES = "cpu"
_REPO = Path(__file__).resolve().parent.parent


@dataclass
class Reading:
    """One viewer: snapshot bytes, seconds to its first byte and to its end, bytes after it."""

    snapshot_bytes: int = 0
    first_byte: float = 0.0
    snapshot_done: float = 0.0
    live_bytes: int = 0
    body: bytearray = field(default_factory=bytearray)


async def _view(port: int, path: str, reading: Reading, keep: bool, until: asyncio.Event) -> None:
    """Read one stream: time the snapshot, then count live bytes until ``until`` is set."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**24)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    buffer = bytearray()
    try:
        while b"\r\n\r\n" not in buffer:
            buffer += await reader.read(65536)
        reading.first_byte = time.perf_counter() - started
        buffer = buffer.split(b"\r\n\r\n", 1)[1]
        marker = buffer.find(b"event: snapshot")
        while marker < 0 or buffer.find(b"\n\n", marker) < 0:
            chunk = await reader.read(1 << 20)
            if not chunk:
                return
            buffer += chunk
            if marker < 0:
                marker = buffer.find(b"event: snapshot")
        reading.snapshot_done = time.perf_counter() - started
        end = buffer.find(b"\n\n", marker) + 2
        reading.snapshot_bytes = end - marker
        if keep:
            reading.body = buffer[:end]
        del buffer
        while not until.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    reading.live_bytes += len(chunk)
    finally:
        writer.close()


def _dechunked_data(body: bytes) -> bytes:
    """The JSON of the snapshot event in a chunked response body (as far as it was read)."""
    payload, pos = bytearray(), 0
    while (end := body.find(b"\r\n", pos)) >= 0:
        size = int(body[pos:end], 16)
        payload += body[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2
        if size == 0 or pos >= len(body):
            break
    event = bytes(payload).split(b"event: snapshot\n", 1)[1]
    return event.split(b"data: ", 1)[1].split(b"\n\n", 1)[0]


def _path(window: str, max_points: int | None, fmt: str) -> str:
    query: dict[str, str] = {"series": SERIES, "window": window, "format": fmt}
    if max_points:
        query["maxPoints"] = str(max_points)
    return "/v1/stream?" + urlencode(query)


async def first_draw(port: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for label, max_points, fmt in (
        ("raw, d3", None, "d3"),
        ("maxPoints=1000, d3", 1000, "d3"),
        ("maxPoints=1000, columns", 1000, "columns"),
        ("raw, columns", None, "columns"),
    ):
        readings = []
        parse = []
        for _ in range(repeats):
            reading, done = Reading(), asyncio.Event()
            done.set()
            await _view(port, _path("10m", max_points, fmt), reading, True, done)
            started = time.perf_counter()
            document = orjson.loads(_dechunked_data(bytes(reading.body)))
            parse.append(time.perf_counter() - started)
            points = len(document.get("points", [])) or sum(len(b["v"]) for b in document.get("blocks", []))
            readings.append((reading, points))
            await asyncio.sleep(0.2)
        rows.append(
            {
                "request": label,
                "points": readings[-1][1],
                "bytes": statistics.median(r.snapshot_bytes for r, _ in readings),
                "first_byte_ms": 1000 * statistics.median(r.first_byte for r, _ in readings),
                "snapshot_ms": 1000 * statistics.median(r.snapshot_done for r, _ in readings),
                "parse_ms": 1000 * statistics.median(parse),
            }
        )
    return rows


def encode_times() -> dict[str, float]:
    """Snapshot encode on the streamer's own code: a ring of 60,000 raw points, raw and as 1 s buckets."""
    from pulsestream_streamer.core.pieces import Part, Plan
    from pulsestream_streamer.core.ring import Ring
    from pulsestream_streamer.core.rollup import rollup
    from pulsestream_streamer.core.samples import Sample

    t0 = 1_795_732_200_000
    ring = Ring(70_000)
    ring.append(
        [
            Sample(t0 + i * 10, t0 + (i - 1) * 10 if i else 0, t0 + i * 10, (i * 7919 % 10007) / 100)
            for i in range(60_000)
        ]
    )
    buckets = Ring(1000)
    started = time.perf_counter()
    closed, _ = rollup(ring.since(0), 1000)
    rollup_ms = 1000 * (time.perf_counter() - started)
    buckets.append(closed)

    def timed(plan: Plan) -> float:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            plan.encode()
            best = min(best, time.perf_counter() - started)
        return 1000 * best

    raw = Plan("d3", b"", [Part("cpu", ring, ring.first_seq - 1, ring.last_seq, "raw")], b"")
    reduced = Plan("d3", b"", [Part("cpu", buckets, buckets.first_seq - 1, buckets.last_seq, "1s")], b"")
    return {"raw_60000_ms": timed(raw), "reduced_600_ms": timed(reduced), "build_600_buckets_ms": rollup_ms}


async def viewers(service: Service, port: int, count: int, max_points: int | None, live: float) -> dict[str, Any]:
    """``count`` viewers of a 1-hour window joining at once: streamer CPU per viewer to join and to follow."""
    path = _path("1h", max_points, "d3")
    done = asyncio.Event()
    readings = [Reading() for _ in range(count)]
    cpu0 = cpu_seconds(service.pid)
    started = time.perf_counter()
    tasks = [asyncio.create_task(_view(port, path, reading, False, done)) for reading in readings]
    while sum(1 for r in readings if r.snapshot_done) < count and time.perf_counter() - started < 300:
        if all(task.done() for task in tasks):
            break
        await asyncio.sleep(0.05)
    joined = time.perf_counter() - started
    cpu1 = cpu_seconds(service.pid)
    await asyncio.sleep(live)
    cpu2 = cpu_seconds(service.pid)
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    ok = [r for r in readings if r.snapshot_done]
    return {
        "request": f"{'raw' if max_points is None else f'maxPoints={max_points}'} x {count}",
        "viewers": len(ok),
        "join_seconds": joined,
        "snapshot_bytes_per_viewer": statistics.mean(r.snapshot_bytes for r in ok) if ok else None,
        "join_cpu_ms_per_viewer": 1000 * (cpu1 - cpu0) / max(1, len(ok)),
        "live_cpu_ms_per_viewer_per_s": 1000 * (cpu2 - cpu1) / max(1, len(ok)) / live,
        "live_bytes_per_viewer_per_s": statistics.mean(r.live_bytes for r in ok) / live if ok else None,
    }


@contextlib.contextmanager
def _services(log_dir: Path, history: str) -> Iterator[tuple[Service, int]]:
    settings = log_dir / "views-settings.json"
    limits = {"requestsPerSecond": 100000, "burst": 1000000, "maxStreamsPerClient": 10000}
    settings.write_text(json.dumps({"frequency": "10ms", "retention": history, "rateLimit": limits}))
    gen_port, port = free_port(), free_port()
    generator = Generator(
        gen_port,
        log_dir / "views-generator.log",
        {"GENERATOR_METRICS_PORT": "0"},
        settings=settings,
        defaults=BENCH_ENV,
        cwd=_REPO,
    )
    streamer_env = {
        "STREAMER_MAX_WINDOW": "1h",
        "STREAMER_RING_CAPACITY": "370000",  # an hour of raw points at 10 ms, so raw viewers get the whole window
        "STREAMER_UNARY_TIMEOUT": "60s",
        "STREAMER_READY_TIMEOUT": "60s",
    }
    streamer = StreamerProcess(
        port, log_dir / "views-streamer.log", generator, streamer_env, settings=settings, defaults=BENCH_ENV, cwd=_REPO
    )
    try:
        generator.start().wait_ready(120)  # the start-up backfill of an hour at 10 ms takes a while
        with streamer:
            yield streamer, port
    finally:
        generator.stop()


async def _warm(port: int) -> None:
    """Load the topics' history (raw and 5s over the hour, 1s over 10 minutes) before measuring."""
    for window, max_points in (("1h", None), ("1h", 1000), ("10m", 1000)):
        reading, done = Reading(), asyncio.Event()
        done.set()
        await _view(port, _path(window, max_points, "d3"), reading, False, done)


def run(log_dir: Path, *, raw_viewers: int, reduced_viewers: int, live: float, repeats: int) -> dict[str, Any]:
    """Both measurements against one generator and streamer; returns the rows the report prints."""
    with _services(log_dir, "61m") as (streamer, port):

        async def main() -> dict[str, Any]:
            await _warm(port)
            draws = await first_draw(port, repeats)
            crowd = [
                await viewers(streamer, port, raw_viewers, None, live),
                await viewers(streamer, port, raw_viewers, 1000, live),
                await viewers(streamer, port, reduced_viewers, 1000, live),
            ]
            return {"first_draw": draws, "viewers": crowd}

        result = asyncio.run(main())
    result["encode"] = encode_times()
    raw, reduced = result["first_draw"][0], result["first_draw"][1]
    result["ratios"] = {
        "bytes_raw_over_reduced_d3": raw["bytes"] / reduced["bytes"],
        "bytes_raw_over_reduced_columns": raw["bytes"] / result["first_draw"][2]["bytes"],
        "snapshot_ms_raw_over_reduced": raw["snapshot_ms"] / reduced["snapshot_ms"],
        "join_cpu_raw_over_reduced": result["viewers"][0]["join_cpu_ms_per_viewer"]
        / max(1e-9, result["viewers"][1]["join_cpu_ms_per_viewer"]),
    }
    return result


def render(result: dict[str, Any]) -> str:
    lines = ["\n## First draw of a 10-minute window of one series at 10 ms (medians)", ""]
    lines.append("| request | points | bytes | first byte ms | snapshot ms | parse ms |")
    lines.append("|---|---|---|---|---|---|")
    for row in result["first_draw"]:
        lines.append(
            f"| {row['request']} | {row['points']:,} | {row['bytes']:,.0f} | {row['first_byte_ms']:.1f} "
            f"| {row['snapshot_ms']:.1f} | {row['parse_ms']:.1f} |"
        )
    encode = result["encode"]
    lines.append(
        f"\nsnapshot encode in-process: raw 60,000 points {encode['raw_60000_ms']:.1f} ms, "
        f"600 buckets {encode['reduced_600_ms']:.2f} ms (building them from the ring once: "
        f"{encode['build_600_buckets_ms']:.1f} ms)"
    )
    lines += ["", "## Viewers of a 1-hour window at 10 ms (per viewer)", ""]
    lines.append("| viewers | joined | join s | snapshot bytes | join CPU ms | live CPU ms/s | live bytes/s |")
    lines.append("|---|---|---|---|---|---|---|")
    for row in result["viewers"]:
        lines.append(
            f"| {row['request']} | {row['viewers']} | {row['join_seconds']:.2f} "
            f"| {row['snapshot_bytes_per_viewer'] or 0:,.0f} | {row['join_cpu_ms_per_viewer']:.2f} "
            f"| {row['live_cpu_ms_per_viewer_per_s']:.3f} | {row['live_bytes_per_viewer_per_s'] or 0:,.0f} |"
        )
    ratios = result["ratios"]
    lines.append(
        f"\nraw / maxPoints=1000: bytes {ratios['bytes_raw_over_reduced_d3']:.0f}x (d3), "
        f"{ratios['bytes_raw_over_reduced_columns']:.0f}x (columns); time to the snapshot's last byte "
        f"{ratios['snapshot_ms_raw_over_reduced']:.1f}x; join CPU per viewer {ratios['join_cpu_raw_over_reduced']:.0f}x"
    )
    return "\n".join(lines)
