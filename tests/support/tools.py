"""Programs from outside Python that tests drive: headless Chromium (through Playwright), node and npm.

On pytest's ``pythonpath``: ``from tools import chromium, artifact``. A laptop without one of them skips the
test that needs it; under ``CI=true`` (``.ci/run`` installs them all) that test fails instead, so CI cannot
pass by skipping.

- :func:`chromium`: a headless Chromium for one ``async with``, with the flags that keep it off the network
  (without them it keeps calling hosts a test machine cannot reach).
- :func:`artifact`: where a test keeps a screenshot for humans (``test-artifacts/``, not versioned).
- :func:`required`, :func:`node`, :func:`npm`: a tool's path, or the skip (the failure under CI) that says
  what is missing and how to get it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn

import pytest
from playwright.async_api import Browser, async_playwright

__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "ROOT",
    "artifact",
    "chromium",
    "chromium_path",
    "missing",
    "node",
    "npm",
    "required",
]

ROOT = Path(__file__).resolve().parents[2]
#: Screenshots and other files a test leaves for humans to look at (``.gitignore`` lists it).
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing(reason: str) -> NoReturn:
    """Skip the test; under ``CI=true``, fail it (CI installs every tool a test needs)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def required(tool: str, path: str | Path | None, how: str) -> str:
    """``path`` if the tool is there; otherwise :func:`missing`, saying ``how`` to get it."""
    if path:
        return str(path)
    missing(f"{tool} is missing ({how})")


def node() -> str:
    return required("node", shutil.which("node"), "Node 20; .ci/run installs the nodejs package")


def npm() -> str:
    return required("npm", shutil.which("npm"), ".ci/run installs the npm package")


def chromium_path() -> str:
    return required(str(CHROMIUM), CHROMIUM if CHROMIUM.exists() else None, ".ci/run installs the chromium package")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Chromium, closed at the end (a test that needs several pages opens them on this one)."""
    executable = chromium_path()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def artifact(name: str) -> Path:
    """``test-artifacts/<name>``, the folder made if need be."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
