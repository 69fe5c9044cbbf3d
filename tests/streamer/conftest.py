"""Fixtures of the streamer tests: a session generator process and a fresh in-process streamer per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from loopback import free_port
from streamer_harness import Generator, Streamer, run_streamer


@pytest.fixture(scope="session")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generator]:
    """One generator for the whole session (tests that kill a generator start their own)."""
    gen = Generator(free_port(), tmp_path_factory.mktemp("generator") / "generator.log")
    gen.start()
    gen.wait_serving()
    yield gen
    gen.stop()


@pytest.fixture
async def streamer(generator: Generator) -> AsyncIterator[Streamer]:
    async with run_streamer(generator.address) as running:
        yield running
