"""Fixtures every component's tests use, and the ``fuzz`` marker on every hypothesis test.

The ``stack`` of a test (or the ``module_stack`` of a module) starts generators, streamers and operators
from their console scripts and stops them all at the end; when the test failed, the end of each log is
printed, which pytest shows with the failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import is_hypothesis_test
from services import Stack


def _stopped(stack: Stack, node: pytest.Item | None) -> None:
    stack.stop_all()
    report = getattr(node, "rep_call", None)
    if report is not None and report.failed:
        print(stack.report())


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Services for one test, stopped after it (streamers first)."""
    services = Stack(tmp_path)
    try:
        yield services
    finally:
        _stopped(services, request.node)


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Services shared by a module's tests, stopped after its last test."""
    services = Stack(tmp_path_factory.mktemp("services"))
    try:
        yield services
    finally:
        _stopped(services, None)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.hookimpl(tryfirst=True)  # before -m deselects: "-m 'not fuzz'" must see the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every hypothesis test is a ``fuzz`` test, marked here so none can be left unmarked."""
    for item in items:
        if is_hypothesis_test(getattr(item, "obj", None)):
            item.add_marker(pytest.mark.fuzz)
