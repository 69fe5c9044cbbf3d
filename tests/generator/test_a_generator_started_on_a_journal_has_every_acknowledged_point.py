"""The write-ahead journal: a generator started on the journal of one that died has every acknowledged point."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from generator_streams import StartGenerator, assert_continuous
from pulsestream_generator.journal import Journal
from pulsestream_generator.publishedstore import MemoryStore
from pulsestream_generator.publishing import SeriesPoints

from pulsestream.v1 import ingest_pb2, ingest_pb2_grpc, timeseries_pb2, timeseries_pb2_grpc

T0 = 1_800_000_000_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _points(series: str, first: int, count: int) -> list[ingest_pb2.PublishPoint]:
    out = []
    for i in range(count):
        point = ingest_pb2.PublishPoint(series=series, value=float(i))
        point.timestamp.seconds, millis = divmod(first + i * 10, 1000)
        point.timestamp.nanos = millis * 1_000_000
        out.append(point)
    return out


@pytest.mark.fault
async def test_a_generator_started_on_a_journal_serves_the_acknowledged_points_with_their_sequences(
    start_generator: StartGenerator, tmp_path: Path
) -> None:
    journal = str(tmp_path / "journal")
    first = await start_generator(ingest_journal_dir=journal, ingest_close_delay="0s")
    base = now_ms() - 5000
    async with grpc.aio.insecure_channel(first.address) as channel:
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        for batch in range(5):
            reply = await ingest.Publish(ingest_pb2.PublishRequest(points=_points("orders", base + batch * 1000, 100)))
            assert reply.accepted == 100
        await ingest.Publish(ingest_pb2.PublishRequest(points=_points("checkout.latency", base, 3)))
    # The first generator is not stopped: a second one reads what the first wrote, as after a kill -9.
    second = await start_generator(ingest_journal_dir=journal)
    async with grpc.aio.insecure_channel(second.address) as channel:
        series = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)
        listed = await series.ListSeries(timeseries_pb2.ListSeriesRequest())
        assert {"orders", "checkout.latency"} <= {info.name for info in listed.series}
        call = series.Subscribe(timeseries_pb2.SubscribeRequest(series=["orders"], after_sequence=base - 1))
        replayed = list((await call.read()).points)
        call.cancel()
        assert len(replayed) == 500 and replayed[0].sequence == base
        assert_continuous(replayed, 10)
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        again = await ingest.Publish(ingest_pb2.PublishRequest(points=_points("orders", base + 4000, 100)))
        assert (again.accepted, again.duplicates) == (0, 100)  # the producer's resend after the crash


@pytest.mark.fault
def test_a_record_cut_short_by_a_crash_is_skipped_and_the_ones_before_it_come_back(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    store = MemoryStore(lambda timeline, appended: None, journal)
    store.recover(0, synthetic=())
    store.append_now({"a": SeriesPoints([T0, T0 + 1], [1.0, 2.0])}, T0)
    store.append_now({"a": SeriesPoints([T0 + 2], [3.0])}, T0)
    store.close()
    (segment,) = tmp_path.glob("segment-*.journal")
    data = segment.read_bytes()
    segment.write_bytes(data[:-5])  # the second record's last bytes never reached the file
    again = MemoryStore(lambda timeline, appended: None, Journal(tmp_path))
    replayed = again.recover(0, synthetic=())
    assert replayed is not None and replayed.points == 2 and replayed.discarded > 0
    timeline = again.timeline("a")
    assert timeline is not None and timeline.newest == T0 + 1
    assert len(list(tmp_path.glob("segment-*.journal"))) == 2  # a fresh segment: the cut one is never appended to


def test_clock_closed_buckets_are_journaled_so_late_points_stay_late_after_a_restart(tmp_path: Path) -> None:
    store = MemoryStore(lambda timeline, appended: None, Journal(tmp_path))
    store.recover(0, synthetic=())
    store.append_now({"a": SeriesPoints([T0 + 100], [1.0])}, T0)
    list(store.seal(T0 + 5_000, 1_000))
    store.append_now({"a": SeriesPoints([T0 + 900], [9.0])}, T0 + 5_000)  # late for the 1s bucket
    before = store.timeline("a")
    assert before is not None and before.late
    again = MemoryStore(lambda timeline, appended: None, Journal(tmp_path))
    again.recover(0, synthetic=())
    after = again.timeline("a")
    assert after is not None
    assert after.late == before.late and after.closed_through == before.closed_through
    assert [b.count for b in after.buckets(0, T0, T0 + 1000)] == [1]


def test_segments_older_than_the_retention_are_deleted_and_synthetic_names_are_not_revived(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=1)  # a segment per record
    store = MemoryStore(lambda timeline, appended: None, journal)
    store.recover(0, synthetic=())
    store.append_now({"old": SeriesPoints([T0], [1.0])}, T0)
    store.append_now({"cpu": SeriesPoints([T0 + 50_000], [1.0])}, T0)
    store.trim(T0 + 10_000, keep=())
    assert len(list(tmp_path.glob("segment-*.journal"))) == 2  # the "old" one is gone, "cpu" and the open one stay
    again = MemoryStore(lambda timeline, appended: None, Journal(tmp_path))
    again.recover(T0, synthetic={"cpu"})
    assert again.names() == []
