"""Bucket means carry no binary floating-point noise (issue 18, item 14: ``0.42417999999999995`` on the wire)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from pulsestream_generator.aggregation import summarise
from pulsestream_streamer.core.rollup import summarise as rollup_summary
from pulsestream_streamer.core.samples import Sample

from pulsestream import means


def test_the_mean_of_decimal_values_reads_as_a_person_would_write_it() -> None:
    values = [0.4242, 0.4241, 0.4243, 0.4241, 0.4242]
    assert math.fsum(values) / len(values) != 0.42418  # the noise this removes
    assert summarise(0, values).mean == 0.42418


def test_the_streamers_built_buckets_are_rounded_the_same_way() -> None:
    samples = [
        Sample(t, t - 10 if t else 0, t, v)
        for t, v in zip(range(0, 50, 10), [0.4242, 0.4241, 0.4243, 0.4241, 0.4242], strict=True)
    ]
    [bucket] = rollup_summary(samples, 1000)
    assert bucket.mean == bucket.v == 0.42418


@given(st.lists(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), min_size=1, max_size=50))
def test_rounding_changes_a_mean_by_no_more_than_its_representation_error(values: list[float]) -> None:
    exact = math.fsum(values) / len(values)
    assert math.isclose(means.mean(math.fsum(values), len(values)), exact, rel_tol=1e-14, abs_tol=1e-300)
