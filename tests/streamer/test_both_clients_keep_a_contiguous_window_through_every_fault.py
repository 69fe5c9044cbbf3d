"""pulsestream.js in headless Chromium and the Python client, side by side, through every fault (issue 16).

One real generator and streamer; both clients follow cpu and memory with an API key holding a ``+``. Then:
the generator is SIGKILLed and restarted on its port (the stream stays open, ``trouble`` is reported, then
cleared by the points), the streamer is SIGKILLed and a new one started (both reconnect on their own and
resume by cursor), and a cursor is made unreadable in flight before a SIGTERM drain (``reset``). After each
recovery every series in the module's window, and every point the Python client yielded, is contiguous:
consecutive sequences exactly one 100 ms tick apart, no duplicate, no gap.

(Both clients are here, not the Python client in ``tests/shared``, because they go through the same faults
at once; its wire decoding is tested there.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from loopback import wait_until
from playwright.async_api import Page, Route
from services import Generator, Stack, StreamerProcess
from sse import gaps_and_duplicates, now_ms
from tools import chromium

from pulsestream.client import Point, Stream

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.fault]

TICK_MS = 100
API_KEY = "client+test/key="
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


@dataclass
class Clients:
    """The page running pulsestream.js and the Python client, on one streamer, and what the test did to them."""

    page: Page
    follower: Follower
    stack: Stack
    #: While set, the Python client's reconnects carry a cursor the server cannot read (see the reset step).
    garble_cursors: bool = False
    #: The cursors the Python client sent that were replaced in flight.
    rewritten: list[str] = field(default_factory=list)

    async def wait_past(self, after: int, what: str) -> None:
        """Both clients hold points of every series after ``after`` (the module live and without trouble)."""
        try:
            await self.page.wait_for_function(PAST, arg=[after, list(SERIES)], timeout=TIMEOUT_MS)
            await wait_until(lambda: self.follower.past(after), TIMEOUT_MS / 1000, "the Python client's points")
        except Exception as error:
            seen = await self.page.evaluate(
                "JSON.stringify({status: s.status, trouble: s.trouble, log, error: s.error?.message})"
            )
            pytest.fail(
                f"{what}: {error!r}\nmodule: {seen}\npython: {self.follower.stream.status}\n{self.stack.report()}"
            )

    async def assert_contiguous(self, what: str) -> None:
        for name in SERIES:
            window: list[int] = await self.page.evaluate("(name) => window.s.points(name).map((p) => p.seq)", name)
            assert len(window) > 100, f"{what}: the module holds {len(window)} points of {name}"
            bad = gaps_and_duplicates(window, TICK_MS)
            assert not bad, f"{what}: {name} in the module's window: {bad[:5]}"
            bad = gaps_and_duplicates(self.follower.points[name], TICK_MS)
            assert not bad, f"{what}: {name} from the Python client: {bad[:5]}"

    async def log(self) -> dict[str, Any]:
        """What the page's listeners recorded (resets, resumed updates, notices, statuses, errors)."""
        log: dict[str, Any] = await self.page.evaluate("window.log")
        return log


@contextlib.asynccontextmanager
async def following(stack: Stack, streamer: StreamerProcess) -> AsyncIterator[Clients]:
    """The module in a page of the streamer's origin and the Python client, both following ``SERIES``."""
    clients: Clients

    async def rewrite(request: httpx.Request) -> None:
        if clients.garble_cursors and "last-event-id" in request.headers and not clients.follower.stream.resets:
            clients.rewritten.append(request.headers["last-event-id"])
            request.headers["Last-Event-ID"] = "not-a-cursor"

    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=60), event_hooks={"request": [rewrite]}) as client,
        chromium() as browser,
    ):
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(streamer.url + "/client/README.md")  # any page of the streamer's origin
        clients = Clients(page, Follower(streamer.url, client), stack)
        task = asyncio.create_task(clients.follower.run())
        try:
            await page.evaluate(OPEN, [API_KEY, list(SERIES)])
            yield clients
            assert errors == []
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await clients.follower.stream.aclose()


async def restart(service: Generator | StreamerProcess) -> None:
    """Start it again on its port (its log goes on) and wait until it serves."""
    service.start()
    await service.aio.wait_ready()


async def the_generator_dies_and_comes_back(clients: Clients, generator: Generator) -> None:
    """kill -9 of the generator, then a start on its port: the streams stay open, trouble comes and goes."""
    page, follower = clients.page, clients.follower
    generator.kill()
    await page.wait_for_function("window.s.trouble !== null && window.s.status === 'live'", timeout=TIMEOUT_MS)
    trouble: dict[str, Any] = await page.evaluate("window.s.trouble")
    assert trouble["code"] == "upstream_unavailable" and set(trouble["series"]) == set(SERIES)
    await wait_until(lambda: set(SERIES) <= follower.stream.trouble, 10, "the Python client's trouble")
    await restart(generator)
    await clients.wait_past(now_ms() + 1_000, "after the generator came back")
    await clients.assert_contiguous("after the generator restart")
    assert await page.evaluate("window.s.reconnects") == 0, "the same connection carried on"
    assert follower.stream.trouble == set()


async def the_streamer_dies_and_a_new_one_starts(clients: Clients, streamer: StreamerProcess) -> None:
    """kill -9 of the streamer, then a new one on its port: both clients reconnect and resume by cursor."""
    page, follower = clients.page, clients.follower
    streamer.kill()
    await page.wait_for_function("window.s.status === 'reconnecting'", timeout=TIMEOUT_MS)
    await restart(streamer)
    await clients.wait_past(now_ms() + 1_000, "after the streamer restart")
    await clients.assert_contiguous("after the streamer restart")
    log = await clients.log()
    assert log["resets"] == 0 and log["resumed"] >= 1, log
    assert log["statuses"][-2:] == ["reconnecting", "live"], log
    assert follower.stream.resets == 0 and follower.stream.connections >= 2


async def an_unreadable_cursor_is_answered_with_a_reset(clients: Clients, streamer: StreamerProcess) -> None:
    """A cursor the server cannot read (as after a long sleep), sent to a drained and restarted streamer:
    a reset snapshot replaces the window, once per client."""
    page, follower = clients.page, clients.follower
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
    clients.garble_cursors = True
    await streamer.aio.stop()  # SIGTERM: server_shutdown with a short retry
    await restart(streamer)
    await page.wait_for_function("window.log.resets >= 1", timeout=TIMEOUT_MS)
    await clients.wait_past(now_ms() + 1_000, "after the reset")
    await clients.assert_contiguous("after the reset")
    log = await clients.log()
    assert "server_shutdown" in log["notices"] and "upstream_unavailable" in log["notices"], log
    assert follower.stream.resets == 1 and clients.rewritten, "the Python client got one reset"
    assert replaced and log["resets"] == 1, "one reset, from the cursor replaced in flight"
    assert "0 unreachable" in log["errors"], "the reconnects while it was down were diagnosed with fetch"
    assert any(n.code == "server_shutdown" for n in follower.stream.notices)
    assert await page.evaluate("window.s.points('cpu').at(-1).seq - window.s.points('cpu')[0].seq") <= (
        30_000 + TICK_MS
    ), "the window is trimmed to 30 s"


async def test_the_module_and_the_python_client_keep_a_contiguous_window_through_every_fault(stack: Stack) -> None:
    generator = await stack.aio.generator(GENERATOR_FREQUENCY=f"{TICK_MS}ms")
    streamer = await stack.aio.streamer(generator, STREAMER_API_KEYS=API_KEY)
    await streamer.aio.wait_health()  # the upstream is up: the clients start on points, not on an outage
    async with following(stack, streamer) as clients:
        await clients.wait_past(now_ms() + 1_000, "first points")
        stream_url = await clients.page.evaluate("window.s.url")
        assert "api_key=…" in stream_url and "client" not in stream_url, "the key never shows in s.url"

        await the_generator_dies_and_comes_back(clients, generator)
        await the_streamer_dies_and_a_new_one_starts(clients, streamer)
        await an_unreadable_cursor_is_answered_with_a_reset(clients, streamer)

        await clients.page.evaluate("window.s.close()")
        assert await clients.page.evaluate("window.s.status") == "closed"
