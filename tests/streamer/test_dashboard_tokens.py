"""The dashboard with API keys on, in headless Chromium (issue 17): the key never goes into a request URL.

Opened as ``/?api_key=KEY``, the page takes the key out of its address at once, trades it (in a header) for a
short-lived token at ``POST /v1/tokens`` and streams with ``?access_token=``. Here tokens live 3 s and streams
end every 2 s (``max_lifetime``), so the page reconnects many times and must mint fresh tokens on its own,
with no gap in what it draws. Every request the browser makes is recorded: the key is in none of their URLs
(raw or percent-encoded), only in the one POST's header.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from urllib.parse import quote

import pytest
from client_stack import API_KEY, ARTIFACTS, TICK_MS, running
from playwright.async_api import Request, async_playwright

pytestmark = pytest.mark.browser

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
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {CHROMIUM} is missing (.ci/run installs the chromium package)")
    pytest.skip(f"needs {CHROMIUM} (apt-get install chromium)")


async def test_the_dashboard_trades_its_key_for_tokens_and_never_puts_the_key_in_a_url(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    requests: list[Request] = []
    errors: list[str] = []

    def record(request: Request) -> None:
        requests.append(request)

    with running(
        tmp_path, STREAMER_TOKEN_TTL="3s", STREAMER_TOKEN_LEEWAY="0s", STREAMER_CLIENT_MAX_LIFETIME="2s"
    ) as stack:
        await stack.start()
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(TIMEOUT_MS)
                page.on("request", record)  # a function: playwright cannot wrap the bound builtin list.append
                page.on("pageerror", lambda error: errors.append(str(error)))
                await page.goto(f"{stack.base}/?api_key={quote(API_KEY, safe='')}&series=cpu&window=1m")
                await page.wait_for_function(
                    "window.pulsestream.state.status === 'live' && window.pulsestream.state.points > 10"
                )
                assert "api_key" not in page.url, "the key left the address bar"
                assert "series=cpu" in page.url, "the rest of the page's address stays shareable"
                # Streams end every 2 s and tokens expire every 3 s: the page keeps reconnecting with fresh ones.
                await page.wait_for_function("window.pulsestream.state.reconnects >= 3", timeout=TIMEOUT_MS)
                mints = [r for r in requests if r.url.endswith("/v1/tokens")]
                assert len(mints) >= 2, "the page minted fresh tokens before the old ones expired"
                await page.wait_for_function("window.pulsestream.state.status === 'live'")
                seqs: list[int] = await page.evaluate("window.pulsestream.buffers.get('cpu').map((p) => p.seq)")
                await page.screenshot(path=str(ARTIFACTS / "dashboard-tokens.png"), full_page=True)
                await page.close()
            finally:
                await browser.close()
        logs = stack.logs()

    assert errors == []
    urls = [request.url for request in requests]
    variants = {API_KEY, quote(API_KEY, safe=""), quote(API_KEY), API_KEY.replace("+", " ")}
    first = f"{stack.base}/?api_key={quote(API_KEY, safe='')}&series=cpu&window=1m"
    leaked = [url for url in urls[1:] if any(v in url for v in variants)]
    assert urls[0] == first and not leaked, f"the key went into a request URL: {leaked}"
    streams = [url for url in urls if "/v1/stream" in url]
    assert len(streams) >= 4 and all("access_token=" in url and "api_key" not in url for url in streams), streams
    assert len({url.split("access_token=")[1].split("&")[0] for url in streams}) >= 2, "not one token for ever"
    mints = [r for r in requests if r.url.endswith("/v1/tokens")]
    assert all(r.method == "POST" and r.headers.get("x-api-key") == API_KEY for r in mints)
    series_calls = [r for r in requests if "/v1/series" in r.url]
    assert series_calls and all(r.headers.get("authorization", "").startswith("Bearer ") for r in series_calls)
    # Across every reconnect, the drawn window has no gap and no duplicate.
    steps = {b - a for a, b in itertools.pairwise(seqs)}
    assert steps == {TICK_MS}, f"steps in the page's window: {sorted(steps)[:10]}"
    assert API_KEY not in logs
