"""Fixtures: one traced generator + streamer pair for the session's observability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from services import Generator, Stack, StreamerProcess
from traces import TRACING_ENV


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
