"""Building protobuf messages for points and buckets (the only place that knows their fields)."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration as PbDuration
from google.protobuf.timestamp_pb2 import Timestamp

from pulsestream.v1 import timeseries_pb2
from pulsestream_generator.aggregation import Bucket


def timestamp(ms: int) -> Timestamp:
    """A protobuf timestamp for epoch milliseconds."""
    seconds, millis = divmod(ms, 1000)
    return Timestamp(seconds=seconds, nanos=millis * 1_000_000)


def duration(seconds: float) -> PbDuration:
    whole = int(seconds)
    return PbDuration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def raw_point(series: str, sequence: int, value: float, previous: int) -> timeseries_pb2.Point:
    return timeseries_pb2.Point(
        series=series,
        sequence=sequence,
        timestamp=timestamp(sequence),
        value=value,
        previous_sequence=previous,
    )


def bucket_point(series: str, bucket: Bucket, previous: int) -> timeseries_pb2.Point:
    return timeseries_pb2.Point(
        series=series,
        sequence=bucket.start,
        timestamp=timestamp(bucket.start),
        value=bucket.mean,
        previous_sequence=previous,
        min=bucket.min,
        max=bucket.max,
        mean=bucket.mean,
        count=bucket.count,
        first=bucket.first,
        last=bucket.last,
    )
