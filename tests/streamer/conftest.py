"""Fixtures of the streamer tests: a session generator process and a fresh in-process streamer per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from loopback import free_port
from services import Generator, Streamer, run_streamer


@pytest.fixture(scope="session")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generator]:
    """One generator for the whole session (tests that kill a generator start their own).

    Two minutes of history, so cursors and windows of the contract tests can reach back that far.
    """
    log = tmp_path_factory.mktemp("generator") / "generator.log"
    gen = Generator(free_port(), log, {"GENERATOR_RETENTION": "2m"}).start().wait_ready()
    yield gen
    gen.stop()


@pytest.fixture
async def streamer(generator: Generator) -> AsyncIterator[Streamer]:
    async with run_streamer(generator.address) as running:
        yield running
