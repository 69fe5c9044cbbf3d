"""Fixtures: real generator apps on 127.0.0.1 port 0, real grpc.aio channels."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from generator_streams import StartGenerator
from pulsestream_generator.server import GeneratorApp
from pulsestream_generator.settings import GeneratorSettings

from pulsestream.v1 import timeseries_pb2_grpc


def settings(**overrides: Any) -> GeneratorSettings:
    """Test settings: loopback, port 0, metrics off, short retention (cheap backfill)."""
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "metrics_port": 0, "retention": "30s"}
    values.update(overrides)
    return GeneratorSettings.model_validate(values)


@pytest.fixture
async def start_generator() -> AsyncIterator[StartGenerator]:
    """Start generator apps with settings overrides; all are stopped at the end of the test."""
    apps: list[GeneratorApp] = []

    async def start(**overrides: Any) -> GeneratorApp:
        app = GeneratorApp(settings(**overrides))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in reversed(apps):
        await app.stop()


@pytest.fixture
async def generator(start_generator: StartGenerator) -> GeneratorApp:
    """A generator ticking every 50 ms with the default series."""
    return await start_generator(frequency="50ms")


@pytest.fixture
async def channel(generator: GeneratorApp) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(generator.address) as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> timeseries_pb2_grpc.TimeSeriesServiceStub:
    return timeseries_pb2_grpc.TimeSeriesServiceStub(channel)
