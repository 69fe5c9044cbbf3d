"""README's "Use it in your own page" example works as written: a page of another origin, against a streamer
started the way the README says (``STREAMER_CORS_ALLOWED_ORIGINS``, no keys, as ``make run``), in Chromium."""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from client_stack import running
from loopback import free_port
from playwright.async_api import async_playwright

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-sync"]


def readme_page() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use it in your own page", 1)[1]
    match = re.search(r"```html\n(.*?)```", section, re.S)
    assert match, "the README's HTML example"
    page = match.group(1)
    assert len(page.strip().splitlines()) <= 15, "a 15-line example"
    return page


@contextlib.contextmanager
def serving(folder: Path, port: int) -> Iterator[None]:
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[assignment,method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {CHROMIUM} is missing (.ci/run installs the chromium package)")
    pytest.skip(f"needs {CHROMIUM} (apt-get install chromium)")


async def test_the_readme_page_draws_live_cpu_from_another_origin(tmp_path: Path) -> None:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    with running(tmp_path, STREAMER_API_KEYS="", STREAMER_CORS_ALLOWED_ORIGINS=origin) as stack:
        await stack.start()
        page_dir = tmp_path / "site"
        page_dir.mkdir()
        (page_dir / "cpu.html").write_text(readme_page().replace("http://127.0.0.1:8080", stack.base))
        with serving(page_dir, port):
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page()
                    errors: list[str] = []
                    page.on("pageerror", lambda error: errors.append(str(error)))
                    await page.goto(f"{origin}/cpu.html")
                    await page.wait_for_function(
                        "document.querySelector('#status').textContent === 'live'"
                        " && (document.querySelector('#line').getAttribute('points') || '').split(' ').length > 50",
                        timeout=30_000,
                    )
                    assert errors == []
                finally:
                    await browser.close()
