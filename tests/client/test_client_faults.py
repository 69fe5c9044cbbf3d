"""pulsestream.js in headless Chromium and the Python client, side by side, through every fault (issue 16).

One real generator and streamer; both clients follow cpu and memory with an API key holding a ``+``. Then:
the generator is SIGKILLed and restarted on its port (the stream stays open, ``trouble`` is reported, then
cleared by the points), the streamer is SIGKILLed and a new one started (both reconnect on their own and
resume by cursor), and a cursor is made unreadable in flight before a SIGTERM drain (``reset``). After each
recovery every series in the module's window, and every point the Python client yielded, is contiguous:
consecutive sequences exactly one 100 ms tick apart, no duplicate, no gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from client_stack import API_KEY, ARTIFACTS, TICK_MS, Stack, now_ms, running, steps
from playwright.async_api import Page, Route, async_playwright

from pulsestream.client import Point, Stream

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
SERIES = ("cpu", "memory")
TIMEOUT_MS = 30_000

OPEN = """
async ([key, series]) => {
  const { connect } = await import("/client/pulsestream.js");
  const log = { resets: 0, resumed: 0, notices: [], statuses: [], errors: [] };
  const s = connect({ series, window: "30s", apiKey: key });
  s.addEventListener("update", (e) => { if (e.detail.reset) log.resets += 1; if (e.detail.resumed) log.resumed += 1; });
  s.addEventListener("notice", (e) => log.notices.push(e.detail.code));
  s.addEventListener("status", (e) => log.statuses.push(e.detail.status));
  s.addEventListener("error", (e) => log.errors.push(`${e.detail.status} ${e.detail.code}`));
  window.s = s;
  window.log = log;
}
"""

# Every series has a point after `after` in the module's window, and the stream is live without trouble.
PAST = """
([after, series]) => window.s.status === "live" && window.s.trouble === null
  && series.every((name) => (window.s.latest(name)?.seq ?? 0) > after)
"""


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {CHROMIUM} is missing (.ci/run installs the chromium package)")
    pytest.skip(f"needs {CHROMIUM} (apt-get install chromium)")


class Follower:
    """The Python client, yielding into per-series lists in a task."""

    def __init__(self, base: str, client: httpx.AsyncClient) -> None:
        self.stream = Stream(base, series=list(SERIES), window="30s", api_key=API_KEY, client=client)
        self.points: dict[str, list[int]] = {name: [] for name in SERIES}

    async def run(self) -> None:
        point: Point
        async for point in self.stream:
            self.points[point.series].append(point.seq)

    def past(self, after: int) -> bool:
        return all(seqs and seqs[-1] > after for seqs in self.points.values())


async def wait(page: Page, follower: Follower, after: int, what: str, stack: Stack) -> None:
    """Both clients hold points of every series after ``after`` (the module live and without trouble)."""
    try:
        await page.wait_for_function(PAST, arg=[after, list(SERIES)], timeout=TIMEOUT_MS)
        async with asyncio.timeout(TIMEOUT_MS / 1000):
            while not follower.past(after):
                await asyncio.sleep(0.05)
    except (TimeoutError, Exception) as error:
        seen = await page.evaluate(
            "JSON.stringify({status: s.status, trouble: s.trouble, log, error: s.error?.message})"
        )
        pytest.fail(f"{what}: {error!r}\nmodule: {seen}\npython: {follower.stream.status}\n{stack.logs()}")


async def assert_contiguous(page: Page, follower: Follower, what: str) -> None:
    for name in SERIES:
        window: list[int] = await page.evaluate("(name) => window.s.points(name).map((p) => p.seq)", name)
        assert len(window) > 100, f"{what}: the module holds {len(window)} points of {name}"
        assert not steps(window), f"{what}: {name} in the module's window: {steps(window)[:5]}"
        yielded = follower.points[name]
        assert not steps(yielded), f"{what}: {name} from the Python client: {steps(yielded)[:5]}"


@contextlib.asynccontextmanager
async def following(stack: Stack) -> AsyncIterator[tuple[Page, Follower, list[str]]]:
    rewritten: list[str] = []  # the Python client's cursors replaced in flight (see the reset step)
    garbage = {"on": False}

    async def rewrite(request: httpx.Request) -> None:
        if garbage["on"] and "last-event-id" in request.headers and not follower.stream.resets:
            rewritten.append(request.headers["last-event-id"])
            request.headers["Last-Event-ID"] = "not-a-cursor"

    follower: Follower
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=60), event_hooks={"request": [rewrite]}) as client,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        follower = Follower(stack.base, client)
        task = asyncio.create_task(follower.run())
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(stack.base + "/client/README.md")  # any page of the streamer's origin
            await page.evaluate(OPEN, [API_KEY, list(SERIES)])
            page.garbage = garbage  # type: ignore[attr-defined]
            yield page, follower, rewritten
            assert errors == []
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await follower.stream.aclose()
            await browser.close()


async def test_the_module_and_the_python_client_keep_a_contiguous_window_through_every_fault(
    tmp_path: Path,
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with running(tmp_path) as stack:
        await stack.start()
        assert stack.generator is not None and stack.streamer is not None
        async with following(stack) as (page, follower, rewritten):
            await wait(page, follower, now_ms() + 1_000, "first points", stack)
            stream_url = await page.evaluate("window.s.url")
            assert "api_key=…" in stream_url and "client" not in stream_url, "the key never shows in s.url"

            # 1. The generator dies (kill -9) and comes back on its port: the stream stays open.
            stack.generator.kill()
            await page.wait_for_function("window.s.trouble !== null && window.s.status === 'live'", timeout=TIMEOUT_MS)
            trouble: dict[str, Any] = await page.evaluate("window.s.trouble")
            assert trouble["code"] == "upstream_unavailable" and set(trouble["series"]) == set(SERIES)
            async with asyncio.timeout(10):
                while not set(SERIES) <= follower.stream.trouble:
                    await asyncio.sleep(0.05)
            await stack.start_generator()
            await wait(page, follower, now_ms() + 1_000, "after the generator came back", stack)
            await assert_contiguous(page, follower, "after the generator restart")
            assert await page.evaluate("window.s.reconnects") == 0, "the same connection carried on"
            assert follower.stream.trouble == set()

            # 2. The streamer dies (kill -9); a new one starts on its port: both reconnect and resume.
            stack.streamer.kill()
            await page.wait_for_function("window.s.status === 'reconnecting'", timeout=TIMEOUT_MS)
            await stack.start_streamer()
            await wait(page, follower, now_ms() + 1_000, "after the streamer restart", stack)
            await assert_contiguous(page, follower, "after the streamer restart")
            log: dict[str, Any] = await page.evaluate("window.log")
            assert log["resets"] == 0 and log["resumed"] >= 1, log
            assert log["statuses"][-2:] == ["reconnecting", "live"], log
            assert follower.stream.resets == 0 and follower.stream.connections >= 2

            # 3. A cursor the server cannot read (as after a long sleep): a reset snapshot replaces the window.
            replaced: list[str] = []

            async def unreadable(route: Route) -> None:
                # Every try until one reaches the new streamer (those while it is down fail anyway).
                url = route.request.url
                if "lastEventId=" in url and not await page.evaluate("window.log.resets"):
                    replaced.append(url)
                    head, _, rest = url.partition("lastEventId=")
                    url = head + "lastEventId=not-a-cursor" + ("&" + rest.split("&", 1)[1] if "&" in rest else "")
                await route.continue_(url=url)

            await page.route("**/v1/stream?*", unreadable)
            page.garbage["on"] = True  # type: ignore[attr-defined]
            stack.streamer.terminate()  # SIGTERM: server_shutdown with a short retry
            await stack.start_streamer()
            await page.wait_for_function("window.log.resets >= 1", timeout=TIMEOUT_MS)
            await wait(page, follower, now_ms() + 1_000, "after the reset", stack)
            await assert_contiguous(page, follower, "after the reset")
            log = await page.evaluate("window.log")
            assert "server_shutdown" in log["notices"] and "upstream_unavailable" in log["notices"], log
            assert follower.stream.resets == 1 and rewritten, "the Python client got one reset"
            assert replaced and log["resets"] == 1, "one reset, from the cursor replaced in flight"
            assert "0 unreachable" in log["errors"], "the reconnects while it was down were diagnosed with fetch"
            assert any(n.code == "server_shutdown" for n in follower.stream.notices)
            assert await page.evaluate("window.s.points('cpu').at(-1).seq - window.s.points('cpu')[0].seq") <= (
                30_000 + TICK_MS
            ), "the window is trimmed to 30 s"
            await page.evaluate("window.s.close()")
            assert await page.evaluate("window.s.status") == "closed"
