"""Reading and checking Subscribe streams in the generator tests."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from pulsestream_generator.server import GeneratorApp

from pulsestream.v1 import timeseries_pb2

#: The ``start_generator`` fixture: start a generator app with settings overrides.
StartGenerator = Callable[..., Awaitable[GeneratorApp]]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def read_messages(call: Any, count: int, timeout: float = 10.0) -> list[timeseries_pb2.SubscribeResponse]:
    """Read ``count`` messages from a stream call, failing if they do not come within ``timeout``."""
    messages = []
    async with asyncio.timeout(timeout):
        while len(messages) < count:
            message = await call.read()
            assert message is not grpc.aio.EOF, f"stream ended after {len(messages)} messages"
            messages.append(message)
    return messages


async def read_until(
    call: Any, done: Callable[[timeseries_pb2.SubscribeResponse], bool], timeout: float = 10.0
) -> list[timeseries_pb2.SubscribeResponse]:
    """Read messages until ``done(message)`` holds for the last one read."""
    messages = []
    async with asyncio.timeout(timeout):
        while True:
            message = await call.read()
            assert message is not grpc.aio.EOF, f"stream ended after {len(messages)} messages"
            messages.append(message)
            if done(message):
                return messages


def points_by_series(messages: list[timeseries_pb2.SubscribeResponse]) -> dict[str, list[timeseries_pb2.Point]]:
    result: dict[str, list[timeseries_pb2.Point]] = {}
    for message in messages:
        for point in message.points:
            result.setdefault(point.series, []).append(point)
    return result


def assert_continuous(points: list[timeseries_pb2.Point], period_ms: int | None = None) -> None:
    """Strictly increasing, each point linked to the one before, and (optionally) evenly spaced."""
    assert points, "no points"
    for before, after in itertools.pairwise(points):
        assert after.sequence > before.sequence, f"not increasing: {before.sequence} then {after.sequence}"
        assert after.previous_sequence == before.sequence, (
            f"gap or duplicate: {after.sequence} links to {after.previous_sequence}, previous was {before.sequence}"
        )
        if period_ms is not None:
            assert after.sequence - before.sequence == period_ms, (
                f"spacing {after.sequence - before.sequence} ms != {period_ms} ms"
            )
