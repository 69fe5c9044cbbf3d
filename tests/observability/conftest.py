"""Fixtures: one traced generator + streamer pair for the session's observability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from traced_stack import Process, start_generator, start_streamer


@pytest.fixture(scope="session")
def traced_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Process]]:
    """A generator and a streamer, both exporting spans to their stdout files."""
    directory = tmp_path_factory.mktemp("traced")
    generator = start_generator(directory)
    try:
        streamer = start_streamer(directory, generator.port)
        try:
            yield generator, streamer
        finally:
            streamer.stop()
    finally:
        generator.stop()
