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

One generator (100 ms ticks, two minutes of history: two closed 1m buckets at once) and one streamer that
needs an API key serve every test of the module, in one Chromium; each test opens pages of its own.
Screenshots (test-artifacts/): dashboard-no-key.png, dashboard-phone.png, dashboard-1m-window.png,
dashboard-outage-phone.png, dashboard-outage.png.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page
from services import MINUTE_WINDOWS, Generator, Stack, StreamerProcess
from sse import now_ms
from tools import artifact, chromium

# One event loop for the module: the browser is the module's, and Playwright's objects belong to a loop.
pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

API_KEY = "client+test/key="
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


@dataclass
class Dashboard:
    generator: Generator
    streamer: StreamerProcess
    browser: Browser
    #: The uncaught errors of every page a test opened: none, at its end.
    errors: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.streamer.url

    async def page(self, query: str, viewport: dict[str, int]) -> Page:
        """The dashboard at ``/{query}`` in a new page of this size."""
        page = await self.browser.new_page(viewport=viewport)  # type: ignore[arg-type]
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        await page.goto(f"{self.base}/{query}")
        return page

    async def connections(self) -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            return int((await client.get(self.base + "/health")).json()["connections"])


@pytest.fixture(scope="module")
def services(module_stack: Stack) -> tuple[Generator, StreamerProcess]:
    generator = module_stack.generator(GENERATOR_FREQUENCY="100ms", GENERATOR_RETENTION="2m")
    streamer = module_stack.streamer(generator, STREAMER_API_KEYS=API_KEY, **MINUTE_WINDOWS)
    streamer.wait_health()  # pages start on points, not on a start-up outage
    return generator, streamer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
def dashboard(services: tuple[Generator, StreamerProcess], browser: Browser) -> Dashboard:
    return Dashboard(*services, browser)


async def test_without_a_key_the_series_chips_say_how_to_give_one_and_nothing_is_streamed(
    dashboard: Dashboard,
) -> None:
    page = await dashboard.page("", DESKTOP)
    await page.wait_for_function("document.querySelector('#series-options').textContent.includes('API key')")
    chips = await page.locator("#series-options").inner_text()
    assert "Loading" not in chips and "/?api_key=" in chips, chips
    assert await page.locator("#status").get_attribute("data-status") == "error"
    assert await page.locator("#error-banner").get_attribute("data-kind") == "error"
    assert await dashboard.connections() == 0, "no stream is opened without the series list"
    await page.screenshot(path=str(artifact("dashboard-no-key.png")), full_page=True)
    await page.close()
    assert dashboard.errors == []


async def test_on_a_phone_the_stream_url_breaks_only_between_its_parameters(dashboard: Dashboard) -> None:
    page = await dashboard.page(f"?api_key={API_KEY}&window=1m", PHONE)
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
    await page.screenshot(path=str(artifact("dashboard-phone.png")), full_page=True)
    await page.close()
    assert dashboard.errors == []


async def test_1m_buckets_in_a_1m_window_grow_it_to_5_buckets_drawn_at_once_with_no_snapshot_delay(
    dashboard: Dashboard,
) -> None:
    page = await dashboard.page(f"?api_key={API_KEY}&series=cpu&resolution=1m&window=1m", DESKTOP)
    await page.wait_for_function(DRAWN, arg=2, timeout=10_000)
    assert await page.locator("#window").input_value() == "5m"
    assert await page.locator("#window option[value='1m']").is_disabled()
    hint = page.locator("#window-hint")
    assert await hint.is_visible() and "5 min" in await hint.inner_text()
    assert "window=5m" in page.url and "window=5m" in await page.evaluate("window.pulsestream.state.streamUrl")
    # The Delay counter: the snapshot's newest bucket closed up to a minute ago; that is no delay.
    state = await page.evaluate("({...window.pulsestream.state, meta: undefined})")
    assert state["snapshots"] == 1
    assert state["delayMs"] is None or state["delayMs"] < 1000, state["delayMs"]
    delay = (await page.locator("#count-delay").inner_text()).strip()
    assert delay == "\u2013" or int(delay.split()[0]) < 1000, delay
    await page.screenshot(path=str(artifact("dashboard-1m-window.png")), full_page=True)
    await page.close()
    assert dashboard.errors == []


async def assert_the_outage_is_amber_and_whole(page: Page, screenshot: str) -> None:
    """The pill says "stalled" in words that fit, the banner is a warning holding the whole message."""
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
    await page.screenshot(path=str(artifact(screenshot)), full_page=True)


@pytest.mark.fault
async def test_a_generator_outage_is_amber_on_a_phone_and_a_desktop_and_clears_when_points_return(
    dashboard: Dashboard,
) -> None:
    phone = await dashboard.page(f"?api_key={API_KEY}&window=1m", PHONE)
    desktop = await dashboard.page(f"?api_key={API_KEY}&window=1m", DESKTOP)
    for page in (phone, desktop):
        await page.wait_for_function(DRAWN, arg=2)
    dashboard.generator.kill()
    await assert_the_outage_is_amber_and_whole(phone, "dashboard-outage-phone.png")
    await assert_the_outage_is_amber_and_whole(desktop, "dashboard-outage.png")
    restarted = now_ms()
    dashboard.generator.start()
    await dashboard.generator.aio.wait_ready()
    for page in (phone, desktop):
        await page.wait_for_function(
            "(after) => window.pulsestream.state.status === 'live'"
            " && Number(document.querySelector('#latest tbody tr td.seq').textContent) > after",
            arg=restarted,
        )
        assert not await page.locator("#error-banner").is_visible()
        await page.close()
    assert dashboard.errors == []
