"""pulsestream.client's decoding, pure: every wire format gives the same points (issue 16)."""

from __future__ import annotations

from pulsestream.client import Point, decode_points


def test_d3_table_and_columns_bodies_decode_to_the_same_points() -> None:
    d3 = {
        "points": [
            {"series": "cpu", "t": 1000, "v": 0.5, "seq": 1000},
            {"series": "cpu", "t": 1100, "v": 0.6, "seq": 1100},
        ]
    }
    table = {"columns": ["series", "t", "v", "seq"], "rows": [["cpu", 1000, 0.5, 1000], ["cpu", 1100, 0.6, 1100]]}
    columns = {"blocks": [{"series": "cpu", "t0": 1000, "dt": [100], "v": [0.5, 0.6]}]}
    expected = [Point("cpu", 1000, 0.5, 1000), Point("cpu", 1100, 0.6, 1100)]
    assert decode_points(d3) == decode_points(table) == decode_points(columns) == expected


def test_column_buckets_carry_min_max_mean_count_and_their_own_sequences() -> None:
    body = {
        "blocks": [
            {
                "series": "m",
                "t0": 0,
                "dt": [1000],
                "v": [1.0, 2.0],
                "min": [0.0, 1.0],
                "max": [2.0, 3.0],
                "count": [10, 10],
                "first": [0.0, 1.0],
                "last": [2.0, 3.0],
                "seq": [7, 8],
            }
        ]
    }
    first, second = decode_points(body)
    assert first == Point("m", 0, 1.0, 7, min=0.0, max=2.0, mean=1.0, count=10, first=0.0, last=2.0)
    assert (second.t, second.seq, second.mean) == (1000, 8, 2.0)
    assert first.time.year >= 1970
