"""Fixtures of the streamer tests.

A session generator process and a fresh in-process streamer per test; a traced generator and streamer
process pair for the tracing and metrics tests. (Tests that kill or restart services start their own
from the ``stack`` fixture.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from loopback import free_port
from services import Generator, Stack, Streamer, StreamerProcess, run_streamer
from traces import TRACING_ENV


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


@pytest.fixture(scope="session")
def traced_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Generator, StreamerProcess]]:
    """A generator and a streamer, both exporting spans to their stdout files.

    The streamer lets a topic go as soon as its last client leaves (``STREAMER_HUB_LINGER=0ms``), so the
    upstream spans end, and are exported, right after a test's request ends.
    """
    services = Stack(tmp_path_factory.mktemp("traced"))
    try:
        generator = services.generator(**TRACING_ENV)
        yield generator, services.streamer(generator, STREAMER_HUB_LINGER="0ms", **TRACING_ENV)
    finally:
        services.stop_all()
