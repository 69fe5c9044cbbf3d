"""What a new user saw on the dashboard, fixed (issue 16), in headless Chromium against a real stack.

- With no key the series chips stayed at "Loading series…": they say the streamer needs a key and how to
  give it, the status is an error, and no stream is opened.
- On a phone the footer's stream URL broke mid-word: it breaks between its parameters only.
- A 1m resolution with a 1m window drew nothing for up to a minute: the window grows to 5 buckets (the
  short option is disabled, a hint says why) and the chart is drawn from the snapshot.
- The Delay counter came from the history snapshot (a bucket closed up to a minute ago): it is a dash
  until live points come, never the snapshot's age.
- A recoverable generator outage was a red "Error" cut to "(up…": it is amber, the pill's words fit,
  and the whole message is in the banner; it clears when points come back.
Screenshots (test-artifacts/): dashboard-no-key.png, dashboard-phone.png, dashboard-1m-window.png,
dashboard-outage-phone.png, dashboard-outage.png.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from client_stack import API_KEY, ARTIFACTS, now_ms, running
from playwright.async_api import Browser, Page, async_playwright

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
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
TIMEOUT_MS = 30_000

# Every lane draws at least `n` points.
DRAWN = """
(n) => {
  const lines = [...document.querySelectorAll("#chart path.line")];
  return window.pulsestream.state.status === "live" && lines.length > 0
    && lines.every((l) => Number(l.dataset.points) >= n);
}
"""


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {CHROMIUM} is missing (.ci/run installs the chromium package)")
    pytest.skip(f"needs {CHROMIUM} (apt-get install chromium)")


async def connections(base: str) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        return int((await client.get(base + "/health")).json()["connections"])


async def page_at(browser: Browser, url: str, viewport: dict[str, int], errors: list[str]) -> Page:
    page = await browser.new_page(viewport=viewport)  # type: ignore[arg-type]
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    return page


async def test_the_dashboard_fixes_what_a_new_user_saw(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with running(tmp_path) as stack:
        await stack.start()
        assert stack.generator is not None
        base = stack.base
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                # No key: the chips say why and what to do; nothing is streamed.
                page = await page_at(browser, base + "/", DESKTOP, errors)
                await page.wait_for_function(
                    "document.querySelector('#series-options').textContent.includes('API key')"
                )
                chips = await page.locator("#series-options").inner_text()
                assert "Loading" not in chips and "/?api_key=" in chips, chips
                assert await page.locator("#status").get_attribute("data-status") == "error"
                assert await page.locator("#error-banner").get_attribute("data-kind") == "error"
                assert await connections(base) == 0, "no stream is opened without the series list"
                await page.screenshot(path=str(ARTIFACTS / "dashboard-no-key.png"), full_page=True)
                await page.close()

                # A phone: the footer URL breaks only between parameters, and nothing is wider than the page.
                page = await page_at(browser, f"{base}/?api_key={API_KEY}&window=1m", PHONE, errors)
                await page.wait_for_function(DRAWN, arg=2)
                await page.wait_for_function("document.querySelectorAll('#stream-url .url-part').length > 3")
                parts = await page.evaluate(
                    """() => [...document.querySelectorAll('#stream-url .url-part')].map((part) => ({
                        text: part.textContent, height: part.getBoundingClientRect().height,
                        line: parseFloat(getComputedStyle(part).lineHeight) || 18}))"""
                )
                assert [p["text"][0] for p in parts[1:]] == ["?"] + ["&"] * (len(parts) - 2), parts
                broken = [p["text"] for p in parts if p["height"] > 1.5 * p["line"]]
                assert not broken, f"broken mid-parameter: {broken}"
                assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
                await page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
                await page.close()

                # 1m buckets in a 1m window: the window grows to 5 buckets, the chart is drawn at once.
                page = await page_at(
                    browser, f"{base}/?api_key={API_KEY}&series=cpu&resolution=1m&window=1m", DESKTOP, errors
                )
                await page.wait_for_function(DRAWN, arg=2, timeout=10_000)
                assert await page.locator("#window").input_value() == "5m"
                assert await page.locator("#window option[value='1m']").is_disabled()
                hint = page.locator("#window-hint")
                assert await hint.is_visible() and "5 min" in await hint.inner_text()
                assert "window=5m" in page.url and "window=5m" in await page.evaluate(
                    "window.pulsestream.state.streamUrl"
                )
                # The Delay counter: the snapshot's newest bucket closed up to a minute ago; that is no delay.
                state = await page.evaluate("({...window.pulsestream.state, meta: undefined})")
                assert state["snapshots"] == 1
                assert state["delayMs"] is None or state["delayMs"] < 1000, state["delayMs"]
                delay = (await page.locator("#count-delay").inner_text()).strip()
                assert delay == "\u2013" or int(delay.split()[0]) < 1000, delay
                await page.screenshot(path=str(ARTIFACTS / "dashboard-1m-window.png"), full_page=True)
                await page.close()

                # A generator outage, on a phone and on a desktop: amber, not cut, the whole message shown.
                phone = await page_at(browser, f"{base}/?api_key={API_KEY}&window=1m", PHONE, errors)
                desktop = await page_at(browser, f"{base}/?api_key={API_KEY}&window=1m", DESKTOP, errors)
                for page in (phone, desktop):
                    await page.wait_for_function(DRAWN, arg=2)
                stack.generator.kill()
                for page, name in ((phone, "dashboard-outage-phone.png"), (desktop, "dashboard-outage.png")):
                    await page.wait_for_function("window.pulsestream.state.status === 'stalled'")
                    status = page.locator("#status")
                    assert await status.get_attribute("data-status") == "stalled"
                    label = await page.evaluate(
                        "() => { const l = document.querySelector('#status .status-label');"
                        " return {text: l.textContent, fits: l.scrollWidth <= l.clientWidth + 1}; }"
                    )
                    assert label["fits"] and "…" not in label["text"] and "Error" not in label["text"], label
                    banner = page.locator("#error-banner")
                    assert await banner.get_attribute("data-kind") == "warn"
                    text = await banner.inner_text()
                    message = await page.evaluate("window.pulsestream.state.message")
                    assert "generator unavailable" in message and message in text, (message, text)
                    assert await banner.evaluate("(b) => b.scrollWidth <= b.clientWidth + 1"), "the banner wraps"
                    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)
                restarted = now_ms()
                await stack.start_generator()
                for page in (phone, desktop):
                    await page.wait_for_function(
                        "(after) => window.pulsestream.state.status === 'live'"
                        " && Number(document.querySelector('#latest tbody tr td.seq').textContent) > after",
                        arg=restarted,
                    )
                    assert not await page.locator("#error-banner").is_visible()
            finally:
                await browser.close()
    assert errors == []
