"""The dashboard in a real headless Chromium, fed by the real generator and streamer over loopback.

The page must fill its chart and table from a real ``EventSource`` (through an API key given in the
page URL, since EventSource cannot send headers), switch resolution by reopening its one stream, and
close that stream when the page goes away. Assertions are on the DOM; ``window.pulsestream`` only
tells the waits when to look. A screenshot is kept in ``test-artifacts/`` for humans.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.async_api import Page
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from services import Generator, Stack, StreamerProcess
from sse import assert_contiguous
from tools import artifact, chromium, chromium_path

from pulsestream.spec import RESOLUTIONS

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

API_KEY = "dashboard-test-key"
BROWSER_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module", autouse=True)
def needs_chromium() -> None:
    """A laptop without Chromium skips before any service starts; CI (CI=true) fails instead."""
    chromium_path()


@dataclass
class Dashboard:
    """A real generator (100 ms ticks) and a real streamer that needs an API key, on free loopback ports.

    The generator can be stopped and started again on the same port, as in a rolling restart.
    """

    generator: Generator
    streamer: StreamerProcess
    stack: Stack

    @property
    def base(self) -> str:
        return self.streamer.url

    def logs(self) -> str:
        return self.stack.report()


async def start_dashboard(
    stack: Stack, generator_env: dict[str, str] | None = None, streamer_env: dict[str, str] | None = None
) -> Dashboard:
    generator = await stack.aio.generator(
        **{"GENERATOR_FREQUENCY": "100ms", "GENERATOR_GRACE_PERIOD": "1s", **(generator_env or {})}
    )
    # The page offers windows up to 10 minutes: the streamer's own window defaults, not the tests' short ones.
    streamer = await stack.aio.streamer(
        generator,
        **{
            "STREAMER_API_KEYS": API_KEY,
            "STREAMER_MAX_WINDOW": "10m",
            "STREAMER_DEFAULT_WINDOW": "5m",
            **(streamer_env or {}),
        },
    )
    return Dashboard(generator, streamer, stack)


@pytest.fixture
async def dashboard(stack: Stack) -> Dashboard:
    return await start_dashboard(stack)


async def active_connections(base: str) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        return int((await client.get(f"{base}/health")).json()["connections"])


async def wait_for_connections(base: str, expected: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (count := await active_connections(base)) != expected:
        assert time.monotonic() < deadline, f"streamer still reports {count} SSE connections, expected {expected}"
        await asyncio.sleep(0.1)


# The chart has one line per selected series with points drawn, and the table a numeric value per series.
FILLED = """
([resolution, minPoints]) => {
  const ps = window.pulsestream;
  if (!ps || ps.state.status !== "live" || !ps.state.streamUrl.includes(`resolution=${resolution}`)) return false;
  const lines = [...document.querySelectorAll("#chart path.line")];
  const rows = [...document.querySelectorAll("#latest tbody tr")];
  const aggregated = resolution !== "raw";
  return lines.length > 0 && rows.length === lines.length
    && lines.every((l) => Number(l.dataset.points) >= minPoints && (l.getAttribute("d") || "").startsWith("M"))
    && rows.every((r) => Number.isFinite(parseFloat(r.querySelector("td.value").dataset.value))
      && (!aggregated || Number.isFinite(parseFloat(r.querySelector("td.min").dataset.value))));
}
"""

CHART = """
() => [...document.querySelectorAll("#chart g.lane")].map((lane) => {
  const line = lane.querySelector("path.line");
  return {series: lane.dataset.series, points: Number(line.dataset.points), d: line.getAttribute("d"),
          stroke: line.getAttribute("stroke")};
})
"""

TABLE = """
() => [...document.querySelectorAll("#latest tbody tr")].map((row) => {
  const cells = {};
  for (const td of row.querySelectorAll("td")) cells[td.className.split(" ")[0]] = td.textContent.trim();
  return {series: row.querySelector("th").textContent.trim(), headers: row.querySelector("th").getAttribute("scope"),
          cells};
})
"""


async def wait_for_page(page: Page, dashboard: Dashboard, resolution: str) -> None:
    """Wait until the page shows data at ``resolution``; on timeout, say what the page and services saw."""
    try:
        await page.wait_for_function(FILLED, arg=[resolution, 2], timeout=BROWSER_TIMEOUT_MS)
    except PlaywrightTimeoutError:
        seen = await page.evaluate("JSON.stringify({...window.pulsestream?.state, meta: undefined})")
        status = await page.locator("#status").inner_text()
        pytest.fail(f"page never filled at {resolution}: status {status!r}, state {seen}\n{dashboard.logs()}")


def number(text: str) -> float:
    return float(text.replace(",", ""))


async def assert_chart_and_table(page: Page, series: list[str], aggregated: bool) -> None:
    chart: list[dict[str, Any]] = await page.evaluate(CHART)
    assert [lane["series"] for lane in chart] == series
    for lane in chart:
        # One "M" then an "L" per further point: every point held is drawn, as numbers.
        assert lane["points"] >= 2, lane
        assert lane["d"].count("L") == lane["points"] - 1, lane
        coordinates = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", lane["d"])]
        assert len(coordinates) >= 2 * lane["points"]
        assert lane["stroke"], "each series has its own colour"
    assert len({lane["stroke"] for lane in chart}) == len(chart)

    table: list[dict[str, Any]] = await page.evaluate(TABLE)
    assert [row["series"] for row in table] == series
    now_ms = time.time() * 1000
    for row in table:
        cells = row["cells"]
        assert row["headers"] == "row"
        number(cells["value"])
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", cells["time"]), cells
        # Sequences are tick times in epoch ms: a live point is from the last minute, not made up.
        assert abs(int(cells["seq"]) - now_ms) < 120_000, cells
        if aggregated:
            low, mean, high = number(cells["min"]), number(cells["mean"]), number(cells["max"])
            assert low <= mean <= high, cells
            assert int(cells["count"]) >= 1, cells
        else:
            assert cells["min"] == cells["max"] == cells["mean"] == "\u2013", cells

    headers = await page.locator("#latest thead th").all_inner_texts()
    assert [h.strip().lower() for h in headers[:5]] == ["series", "value", "unit", "time", "seq"]
    assert await page.locator("#status").get_attribute("data-status") == "live"
    assert (await page.locator("#status").inner_text()).strip() == "Live"
    assert number(await page.locator("#count-events").inner_text()) > 0
    assert number(await page.locator("#count-points").inner_text()) >= 2 * len(series)
    assert await page.locator("#legend li").count() == len(series)


async def served_catalogue(streamer_url: str) -> tuple[list[str], list[str]]:
    """The series and resolutions ``/v1/series`` serves, which the page must show; and what it needs besides."""
    async with httpx.AsyncClient(timeout=5) as client:
        # The API is closed without a key, so a filled page proves it passed ?api_key= to /v1.
        assert (await client.get(f"{streamer_url}/v1/series")).status_code == 401
        listed = (await client.get(f"{streamer_url}/v1/series", params={"api_key": API_KEY})).json()
        d3_reply = await client.get(f"{streamer_url}/static/vendor/d3.min.js")
    assert d3_reply.status_code == 200
    assert "d3js.org v7" in d3_reply.text[:200], "D3 is served by the streamer itself, no CDN"
    entries = listed if isinstance(listed, list) else listed["series"]
    series = [entry["name"] for entry in entries]
    assert series
    served: list[str] = entries[0]["resolutions"]
    assert served == list(RESOLUTIONS), "the generator serves the shared spec's resolutions"
    return series, served


async def test_dashboard_fills_chart_and_table_from_a_real_stream_and_reopens_on_resolution_change(
    dashboard: Dashboard,
) -> None:
    streamer_url = dashboard.base
    series, served = await served_catalogue(streamer_url)

    page_errors: list[str] = []
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        page.on("console", lambda msg: page_errors.append(msg.text) if msg.type == "error" else None)
        page.set_default_timeout(BROWSER_TIMEOUT_MS)

        # A 1-minute window: one point per pixel holds every raw tick, so the page gets raw points.
        await page.goto(f"{streamer_url}/?api_key={API_KEY}&window=1m")
        await wait_for_page(page, dashboard, "raw")
        assert "maxPoints=" in await page.evaluate("window.pulsestream.state.streamUrl")
        await assert_chart_and_table(page, series, aggregated=False)
        # The resolution picker offers exactly what /v1/series serves, in its order: no list of its own.
        radios = page.locator("#resolution-options input[name=resolution]")
        assert await radios.evaluate_all("(radios) => radios.map((r) => r.value)") == served
        assert [t.strip() for t in await page.locator("#resolution-options label").all_inner_texts()] == served
        assert await page.locator("#resolution-options input:checked").get_attribute("value") == "raw"
        assert await page.evaluate("window.pulsestream.state.opens") == 1
        assert await page.evaluate("window.pulsestream.state.snapshots") >= 1
        assert await active_connections(streamer_url) == 1, "one EventSource carries every series"
        await page.screenshot(path=str(artifact("dashboard.png")), full_page=True)

        # Resolution through the control, found by its accessible name: the stream reopens.
        await page.get_by_role("radio", name="1s", exact=True).check()
        await wait_for_page(page, dashboard, "1s")
        state = await page.evaluate("({...window.pulsestream.state, meta: undefined})")
        assert state["opens"] == 2
        assert "resolution=1s" in state["streamUrl"]
        assert "resolution=1s" in page.url, "the page URL keeps the choice shareable"
        await assert_chart_and_table(page, series, aggregated=True)
        await wait_for_connections(streamer_url, 1)  # the raw stream was closed, not left behind
        await page.screenshot(path=str(artifact("dashboard-1s.png")), full_page=True)

        # Unticking a series (its checkbox, by label) reopens the one stream without it.
        dropped, kept = series[-1], series[:-1]
        await page.get_by_role("checkbox", name=re.compile(rf"^{re.escape(dropped)}( \(|$)")).uncheck()
        await page.wait_for_function(
            "([n, dropped]) => window.pulsestream.state.opens === 3"
            " && !window.pulsestream.state.streamUrl.includes(dropped)"
            " && document.querySelectorAll('#chart g.lane').length === n",
            arg=[len(kept), dropped],
        )
        await wait_for_page(page, dashboard, "1s")
        await assert_chart_and_table(page, kept, aggregated=True)

        await page.close()
        await wait_for_connections(streamer_url, 0)  # leaving the page closes its EventSource
    assert page_errors == []


@pytest.mark.fault
async def test_dashboard_shows_upstream_trouble_then_resumes_without_gap_when_the_generator_restarts(
    dashboard: Dashboard,
) -> None:
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        await page.goto(f"{dashboard.base}/?api_key={API_KEY}&series=cpu&window=1m")
        await wait_for_page(page, dashboard, "raw")
        seq_before = int(await page.locator("#latest tbody tr td.seq").inner_text())

        # The stream stays open while the upstream is down; the page says so with the server's message.
        # Issue 16: a recoverable outage is "stalled" (amber, the whole message in the banner), not a red
        # "Error" with its text cut off in the status pill, which now holds a few words and the message as title.
        await dashboard.generator.aio.stop()  # SIGTERM: it drains and exits
        await page.wait_for_function("window.pulsestream.state.status === 'stalled'", timeout=BROWSER_TIMEOUT_MS)
        assert await page.locator("#status").get_attribute("data-status") == "stalled"
        banner = page.locator("#error-banner")
        assert await banner.is_visible()
        message = await page.evaluate("window.pulsestream.state.message")
        assert message and message in await banner.inner_text()
        assert message == await page.locator("#status").get_attribute("title")
        await page.screenshot(path=str(artifact("dashboard-upstream-error.png")), full_page=True)

        dashboard.generator.start()  # the same port, as in a rolling restart
        await dashboard.generator.aio.wait_ready()
        await page.wait_for_function(
            "window.pulsestream.state.status === 'live' && window.pulsestream.state.points > 0"
            f" && Number(document.querySelector('#latest tbody tr td.seq').textContent) > {seq_before + 1000}",
            timeout=BROWSER_TIMEOUT_MS,
        )
        assert not await banner.is_visible()
        assert await page.evaluate("window.pulsestream.state.opens") == 1, "the same EventSource carried on"
        # Raw sequences are tick times 100 ms apart: across the outage the browser holds no gap and no duplicate.
        seqs: list[int] = await page.evaluate("window.pulsestream.buffers.get('cpu').map((p) => p.seq)")
        assert len(seqs) >= 2, seqs
        assert_contiguous(seqs, step=100)


async def test_dashboard_draws_a_ten_minute_window_at_10_ms_within_a_second(stack: Stack) -> None:
    """Issue 15: 60,000 points per series reduced by the server to about one bucket per pixel."""
    dashboard = await start_dashboard(
        stack, {"GENERATOR_FREQUENCY": "10ms", "GENERATOR_RETENTION": "11m"}, {"STREAMER_RING_CAPACITY": "65000"}
    )
    # Others already watch these series (warm topics: the history is loaded), as on a running system.
    async with httpx.AsyncClient(timeout=60) as client:
        for resolution in ("raw", "1s"):
            query = {"api_key": API_KEY, "window": "10m", "resolution": resolution, "maxPoints": "10000"}
            async with client.stream("GET", f"{dashboard.base}/v1/stream", params=query) as reply:
                async for chunk in reply.aiter_bytes():
                    if b"event: points" in chunk:
                        break
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        await page.goto(f"{dashboard.base}/?api_key={API_KEY}&window=10m")
        await page.wait_for_function("window.pulsestream && window.pulsestream.state.firstDrawMs !== null")
        state = await page.evaluate("({...window.pulsestream.state, meta: undefined})")
        took = state["firstDrawMs"]
        print(f"\nfirst draw {took:.0f} ms after navigation, {state['bucketMs']} ms buckets")
        assert took < 1000, f"first draw after {took:.0f} ms"
        assert state["maxPoints"] >= 1000 and f"maxPoints={state['maxPoints']}" in state["streamUrl"]
        assert state["bucketMs"] in (500, 1000), "about one bucket per pixel: 600,000 ms / ~1,200 px"
        await page.wait_for_function(FILLED, arg=["raw", 100])
        chart: list[dict[str, Any]] = await page.evaluate(CHART)
        assert all(100 < lane["points"] <= state["maxPoints"] for lane in chart), chart
        bands = await page.evaluate(
            "[...document.querySelectorAll('#chart path.band')].map((b) => (b.getAttribute('d') || '').length)"
        )
        assert bands and all(length > 100 for length in bands), "each lane draws its min-max band"
        await page.screenshot(path=str(artifact("dashboard-10m-at-10ms.png")), full_page=True)

        # Switching window stays instant: a new stream, a new width, drawn at once.
        await page.select_option("#window", "5m")
        await page.wait_for_function(
            "window.pulsestream.state.opens === 2 && window.pulsestream.state.openDrawMs !== null"
        )
        switched = await page.evaluate("({...window.pulsestream.state, meta: undefined})")
        assert switched["bucketMs"] < state["bucketMs"], "a narrower window gets narrower buckets"
        assert switched["openDrawMs"] < 1000, f"redrawn {switched['openDrawMs']:.0f} ms after the switch"


async def test_a_resolution_in_the_page_url_is_kept_when_served_and_falls_back_to_raw_when_not(
    dashboard: Dashboard,
) -> None:
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(BROWSER_TIMEOUT_MS)
        for asked, shown in (("5s", "5s"), ("2s", "raw")):
            await page.goto(f"{dashboard.base}/?api_key={API_KEY}&series=cpu&resolution={asked}")
            await page.wait_for_function(
                "(r) => window.pulsestream.state.streamUrl.includes(`resolution=${r}`)", arg=shown
            )
            assert await page.locator("#resolution-options input:checked").get_attribute("value") == shown
            assert f"resolution={shown}" in page.url
