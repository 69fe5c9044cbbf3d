"""Token bucket and stream cap per client: exact with an injected clock, live-tunable, bounded in memory."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pulsestream_streamer.access.ratelimit import STREAM_RETRY_AFTER, RateLimiter, retry_after_header

from pulsestream.spec import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits(rps: float = 5, burst: int = 10, streams: int = 4) -> RateLimit:
    return RateLimit(requests_per_second=rps, burst=burst, max_streams_per_client=streams)


def test_a_burst_goes_through_then_the_next_request_waits_for_one_token() -> None:
    clock = Clock()
    limiter = RateLimiter(limits(rps=2, burst=3), clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == 0.5
    clock.now += 0.5
    assert limiter.acquire("a") == 0.0


def test_clients_have_separate_buckets() -> None:
    limiter = RateLimiter(limits(rps=1, burst=1), Clock())
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one() -> None:
    assert [retry_after_header(s) for s in (0.0, 0.01, 1.0, 1.2, 7.9)] == ["1", "1", "1", "2", "8"]


def test_the_stream_cap_refuses_the_next_stream_until_one_closes() -> None:
    limiter = RateLimiter(limits(streams=2), Clock())
    assert limiter.open_stream("a") == 0.0 and limiter.open_stream("a") == 0.0
    assert limiter.open_stream("a") == STREAM_RETRY_AFTER
    assert limiter.open_stream("b") == 0.0
    limiter.close_stream("a")
    assert limiter.open_stream("a") == 0.0
    assert limiter.streams("a") == 2


def test_closing_more_streams_than_opened_never_goes_negative() -> None:
    limiter = RateLimiter(limits(), Clock())
    limiter.close_stream("ghost")
    limiter.open_stream("a")
    limiter.close_stream("a")
    limiter.close_stream("a")
    assert limiter.streams("a") == 0


def test_configure_applies_a_lower_burst_and_rate_at_once() -> None:
    clock = Clock()
    limiter = RateLimiter(limits(rps=100, burst=100), clock)
    assert limiter.acquire("a") == 0.0
    limiter.configure(limits(rps=1, burst=2))
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 1.0]


def test_configure_grants_a_raised_burst_at_once() -> None:
    clock = Clock()
    limiter = RateLimiter(limits(rps=0.1, burst=2), clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 10.0]
    limiter.configure(limits(rps=0.1, burst=5))
    assert [limiter.acquire("a") for _ in range(4)] == [0.0, 0.0, 0.0, 10.0]


def test_configure_applies_a_new_stream_cap_to_new_streams_only() -> None:
    limiter = RateLimiter(limits(streams=3), Clock())
    for _ in range(3):
        assert limiter.open_stream("a") == 0.0
    limiter.configure(limits(streams=1))
    assert limiter.streams("a") == 3
    assert limiter.open_stream("a") > 0
    for _ in range(3):
        limiter.close_stream("a")
    assert limiter.open_stream("a") == 0.0


def test_idle_clients_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(limits(rps=10, burst=10), clock)
    for n in range(1000):
        limiter.acquire(f"c{n}")
    clock.now += 1.0  # every bucket is full again
    limiter.acquire("late")
    assert len(limiter) == 1


def test_clients_with_open_streams_are_kept_and_memory_stays_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(limits(rps=0.001, burst=10), clock, max_clients=100)
    limiter.open_stream("streamer")
    for n in range(10_000):
        limiter.acquire(f"c{n}")
        assert len(limiter) <= 101
    assert limiter.streams("streamer") == 1


@settings(max_examples=200, deadline=None)
@given(
    rps=st.floats(min_value=0.1, max_value=1000),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=300),
)
def test_a_client_never_gets_more_than_burst_plus_rate_times_elapsed(rps: float, burst: int, gaps: list[float]) -> None:
    clock = Clock()
    limiter = RateLimiter(limits(rps=rps, burst=burst), clock)
    allowed: list[float] = []
    for gap in gaps:
        clock.now += gap
        if limiter.acquire("a") == 0.0:
            allowed.append(clock.now)
    # every window [allowed[i], allowed[j]] holds at most burst + rps * (t_j - t_i) requests
    for i in range(len(allowed)):
        for j in range(i, len(allowed)):
            assert j - i + 1 <= burst + rps * (allowed[j] - allowed[i]) + 1e-6


@settings(max_examples=100, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=100))
def test_a_refused_request_is_allowed_after_the_retry_after_it_was_given(gaps: list[float]) -> None:
    clock = Clock()
    limiter = RateLimiter(limits(rps=3, burst=2), clock)
    for gap in gaps:
        clock.now += gap
        wait = limiter.acquire("a")
        if wait:
            clock.now += wait
            assert limiter.acquire("a") == 0.0
