"""Fixtures: a :class:`Launcher` per test module, which stops every service it started."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from liveservices import Launcher


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory.mktemp("services"))
    try:
        yield launcher
    finally:
        launcher.stop_all()
