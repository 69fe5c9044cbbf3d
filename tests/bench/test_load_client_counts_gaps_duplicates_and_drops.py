"""The load client counts what a server really sends: gaps, duplicates, drops, heartbeats, latency.

A scripted SSE server on a loopback port (no product code involved) sends a
known sequence over real sockets, chunked as uvicorn does, with a ``\\r\\n``
line separator as sse-starlette does; the real load client worker processes
read it. The smoke test can only show zeros; this shows the counters work.
"""

import asyncio
import time

import orjson

from bench.loadclient import LoadPlan, LoadRun, Tally

STEP = 10


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(kind: str, seqs: list[int], now_ms: int) -> bytes:
    points = [{"series": "cpu", "t": now_ms - 5, "v": 0.5, "seq": seq} for seq in seqs]
    data = orjson.dumps({"points": points, "meta": {}})
    return f"event: {kind}\r\nid: {seqs[-1] if seqs else 0}\r\ndata: ".encode() + data + b"\r\n\r\n"


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    now = int(time.time() * 1000)
    base = now - now % STEP
    script = [
        b"retry: 2000\r\n\r\n",
        _event("snapshot", [base - 20, base - 10], now),
        _event("points", [base], now),
        _event("points", [base + 20], now),  # base + 10 is missing: one gap
        _event("points", [base + 20, base + 30], now),  # base + 20 again: one duplicate
        b": heartbeat\r\n\r\n",
        b'event: notice\r\ndata: {"code": "slow_consumer", "message": "x"}\r\n\r\n',
    ]
    for part in script:
        # Split each chunk's bytes over two writes, so the client meets every boundary.
        framed = _chunk(part)
        writer.write(framed[:7])
        await writer.drain()
        writer.write(framed[7:])
        await writer.drain()
    try:
        await reader.read()  # hold the stream open until the client leaves
    finally:
        writer.close()


def _run_load(port: int, connections: int) -> Tally:
    plan = LoadPlan(host="127.0.0.1", port=port, path="/v1/stream", connections=connections, step_ms=STEP)
    with LoadRun(plan, processes=2) as load:
        load.control.set_window(time.time() - 60, time.time() + 60)
        deadline = time.monotonic() + 60
        while load.opened() < connections and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.0)  # the script is sent at once; give the workers time to read it
        return load.collect(timeout=30)


async def test_the_load_client_counts_gaps_duplicates_drops_and_latency() -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        tally = await asyncio.to_thread(_run_load, port, 4)
    finally:
        server.close()
        await server.wait_closed()
    assert tally.opened == 4
    assert tally.snapshot_events == 4
    assert tally.snapshot_points == 8
    assert tally.events == 12  # three points events per stream
    assert tally.points == 16  # 1 + 1 + 2 per stream
    assert tally.gaps == 4
    assert tally.missing == 4
    assert tally.duplicates == 4
    assert tally.other_events == {"notice:slow_consumer": 4}
    assert tally.heartbeats == 4
    # Points are stamped 5 ms before they are sent, on this machine's clock.
    p50 = tally.histogram.percentile(0.5)
    assert p50 is not None
    assert 5 <= p50 < 5000
    assert any("gap in points event" in example for example in tally.examples)
