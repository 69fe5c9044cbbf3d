"""The HTTP contract of DESIGN.md against a real generator and a real streamer."""

from __future__ import annotations

import contextlib
import time

import httpx
import pytest
from pulsestream_streamer.core import cursor as cursors
from services import FREQUENCY_MS, Generator, Streamer, parse_metrics, run_streamer
from sse import assert_contiguous, seqs_by_series, sse


async def test_stream_sends_headers_retry_then_snapshot_then_points_with_ids(streamer: Streamer) -> None:
    url = streamer.url + "/v1/stream?series=cpu,memory&window=2s"
    async with sse(url) as reader:
        response = reader.response
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        snapshot = await reader.next()
        assert reader.blocks[0].startswith(b"retry: "), "retry: must come first"
        assert reader.retry == 2000
        assert snapshot.event == "snapshot"
        assert snapshot.id
        assert snapshot.data["reset"] is False
        assert snapshot.data["resumed"] is False
        events = [snapshot, *[await reader.next() for _ in range(6)]]
    assert all(event.event == "points" and event.id for event in events[1:])
    assert len({event.id for event in events}) == len(events), "every event has its own cursor"
    now_ms = time.time() * 1000
    rows = [row for event in events for row in event.data["points"]]
    assert {row["series"] for row in rows} == {"cpu", "memory"}
    for row in rows:
        assert set(row) == {"series", "t", "v", "seq"}
        assert isinstance(row["t"], int) and now_ms - 60_000 < row["t"] <= now_ms + 1000, "t is epoch ms"
        assert isinstance(row["v"], float)
    # The window's history, then live points: per series no gap and no duplicate across events.
    for seqs in seqs_by_series(events).values():
        assert_contiguous(seqs)
    snapshot_rows = snapshot.data["points"]
    assert len(snapshot_rows) >= 2 * (2000 // FREQUENCY_MS) - 4, "a 2s window of two series"
    meta = snapshot.data["meta"]
    assert meta["x"] == "t" and meta["y"] == "v" and meta["xType"] == "time"
    assert meta["units"] == {"cpu": "ratio", "memory": "MiB"}
    assert meta["yDomains"]["cpu"] == [0.0, 1.0]
    assert meta["xDomain"][1] - meta["xDomain"][0] == 2000
    assert meta["resolution"] == "raw" and meta["windowMs"] == 2000
    assert cursors.decode(events[-1].id).positions.keys() == {"cpu", "memory"}


async def test_table_format_gives_columns_and_rows(streamer: Streamer) -> None:
    async with sse(streamer.url + "/v1/stream?series=latency&window=1s&format=table") as reader:
        snapshot = await reader.next()
        update = await reader.next()
    for event in (snapshot, update):
        assert event.data["columns"] == ["series", "t", "v", "seq"]
        for row in event.data["rows"]:
            assert len(row) == 4 and row[0] == "latency" and isinstance(row[1], int)
    assert snapshot.data["rows"], "the window's history"


async def test_aggregated_resolution_carries_bucket_statistics(streamer: Streamer) -> None:
    async with sse(streamer.url + "/v1/stream?series=cpu&resolution=1s&window=10s") as reader:
        snapshot = await reader.next()
    rows = snapshot.data["points"]
    assert len(rows) >= 5
    for row in rows:
        assert {"min", "max", "mean", "count", "first", "last"} <= set(row)
        assert row["min"] <= row["v"] <= row["max"]
        assert row["count"] == 1000 // FREQUENCY_MS
        assert row["t"] % 1000 == 0, "buckets are aligned to the second"
    assert snapshot.data["meta"]["bucketMs"] == 1000


async def test_series_lists_the_generator_catalogue(streamer: Streamer) -> None:
    async with httpx.AsyncClient() as client:
        body = (await client.get(streamer.url + "/v1/series")).json()
    assert isinstance(body, list), "the HTTP contract: a JSON list of series with metadata"
    names = [entry["name"] for entry in body]
    assert names == ["cpu", "memory", "requests", "latency"]
    cpu = body[0]
    assert cpu["unit"] == "ratio" and cpu["description"] and cpu["expectedRange"] == [0.0, 1.0]
    for entry in body:
        assert entry["source"] == "generator"
        assert entry["frequencyMs"] == FREQUENCY_MS
        assert set(entry["resolutions"]) == {"raw", "1s", "5s", "1m"}


async def test_health_reports_upstream_connections_and_versions(streamer: Streamer) -> None:
    async with httpx.AsyncClient() as client, sse(streamer.url + "/v1/stream?series=cpu") as reader:
        await reader.next()
        response = await client.get(streamer.url + "/health")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ok"
    assert body["upstream"] == "ready"
    assert body["upstream_detail"]["streams"] == 1
    assert body["connections"] == 1
    assert body["version"] and body["config_version"]
    assert body["settings_error"] is None


async def test_metrics_parse_as_prometheus_text(streamer: Streamer) -> None:
    async with sse(streamer.url + "/v1/stream?series=cpu&window=1s") as reader:
        await reader.next()
        await reader.next()
        async with httpx.AsyncClient() as client:
            response = await client.get(streamer.url + "/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    families = parse_metrics(response.text).families
    for name in (
        "pulsestream_streamer_sse_connections",
        "pulsestream_streamer_sse_events_sent",
        "pulsestream_streamer_sse_bytes_sent",
        "pulsestream_streamer_sse_client_drops",
        "pulsestream_streamer_upstream_streams",
        "pulsestream_streamer_upstream_reconnects",
        "pulsestream_streamer_delivery_lag_seconds",
    ):
        assert name in families, name
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert values[("pulsestream_streamer_sse_connections", ())] == 1
    assert values[("pulsestream_streamer_sse_events_sent_total", (("event", "points"),))] >= 1
    assert values[("pulsestream_streamer_delivery_lag_seconds_count", ())] >= 1


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("series=", "series"),
        ("series=cpu,,memory", "series"),
        ("series=nope", "series"),
        ("series=CPU;drop", "series"),
        ("series=cpu&resolution=2s", "resolution"),
        ("series=cpu&window=forever", "window"),
        ("series=cpu&window=48h", "window"),
        ("series=cpu&format=csv", "format"),
        ("series=cpu&lastEventId=" + "A" * 2000, "lastEventId"),
    ],
)
async def test_bad_parameters_get_400_naming_the_parameter(streamer: Streamer, query: str, parameter: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{streamer.url}/v1/stream?{query}")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "bad_parameter"
    assert error["parameter"] == parameter
    assert error["message"]


async def test_unreadable_last_event_id_starts_over_with_a_reset_snapshot(streamer: Streamer) -> None:
    url = streamer.url + "/v1/stream?series=cpu&window=1s"
    async with sse(url, {"Last-Event-ID": "not-a-cursor"}) as reader:
        snapshot = await reader.next()
    assert snapshot.event == "snapshot"
    assert snapshot.data["reset"] is True and snapshot.data["resumed"] is False
    assert len(snapshot.data["points"]) >= 1000 // FREQUENCY_MS - 2, "a fresh window"


async def test_cursor_older_than_retention_starts_over_with_a_reset_snapshot(streamer: Streamer) -> None:
    ancient = int(time.time() * 1000) - 3_600_000  # the test generator keeps 2m
    cursor = cursors.encode("raw", {"cpu": ancient})
    async with sse(f"{streamer.url}/v1/stream?series=cpu&window=1s&lastEventId={cursor}") as reader:
        snapshot = await reader.next()
    assert snapshot.data["reset"] is True
    assert snapshot.data["points"], "a fresh window instead"


async def test_root_serves_the_dashboard_page(streamer: Streamer) -> None:
    async with httpx.AsyncClient() as client:
        page = await client.get(streamer.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/static/" in page.text


async def test_an_idle_stream_gets_heartbeat_comments(generator: Generator) -> None:
    # 1m buckets: nothing to send for a while, so heartbeats (1s here) keep the connection alive.
    async with (
        run_streamer(generator.address, heartbeat_interval="1s", sweep_interval="100ms") as streamer,
        sse(streamer.url + "/v1/stream?series=cpu&resolution=1m&window=0ms") as reader,
    ):
        await reader.next()
        deadline = time.monotonic() + 2.5
        with contextlib.suppress(TimeoutError):
            while True:  # a minute bucket may close meanwhile: that event is fine, we look at comments
                await reader.next(timeout=max(0.01, deadline - time.monotonic()))
    assert reader.comments, "no heartbeat while idle"
    assert all(comment.startswith(b":") for comment in reader.comments)


async def test_a_stream_past_its_max_lifetime_is_told_to_reconnect_and_resumes(generator: Generator) -> None:
    async with run_streamer(generator.address, client_max_lifetime="1s", sweep_interval="100ms") as streamer:
        url = streamer.url + "/v1/stream?series=cpu&window=1s"
        async with sse(url) as reader:
            events = await reader.until(lambda e: e.event == "notice", timeout=10)
            assert events[-1].data["code"] == "max_lifetime"
            assert b"event: points" not in await reader.rest(), "the stream ends after it"
        last_id = next(e.id for e in reversed(events) if e.id)
        async with sse(url, {"Last-Event-ID": last_id}) as again:
            resumed = [await again.next(), await again.next()]
        assert resumed[0].data["resumed"] is True
        assert_contiguous(seqs_by_series(events + resumed)["cpu"])
