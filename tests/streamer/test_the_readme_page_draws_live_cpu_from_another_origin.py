"""README's "Use it in your own page" example works as written: a page of another origin, against a streamer
started the way the README says (``STREAMER_CORS_ALLOWED_ORIGINS``, no keys, minutes of window, as ``make
run``), in Chromium."""

from __future__ import annotations

import contextlib
import http.server
import re
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from loopback import free_port
from services import MINUTE_WINDOWS, Stack
from tools import ROOT, chromium

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


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


async def test_the_readme_page_draws_live_cpu_from_another_origin(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    generator = await stack.aio.generator()
    streamer = await stack.aio.streamer(generator, STREAMER_CORS_ALLOWED_ORIGINS=origin, **MINUTE_WINDOWS)
    await streamer.aio.wait_health()
    page_dir = tmp_path / "site"
    page_dir.mkdir()
    (page_dir / "cpu.html").write_text(readme_page().replace("http://127.0.0.1:8080", streamer.url))
    with serving(page_dir, port):
        async with chromium() as browser:
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
