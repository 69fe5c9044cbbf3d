"""A Python client of the streamer's ``/v1/stream``: live points as an async iterator (issue 16).

For notebooks, bots and tests: the same semantics as ``pulsestream.js``, on
``httpx`` and ``httpx-sse``::

    async with Stream("http://127.0.0.1:8080", series=["cpu"], window="1m") as stream:
        async for point in stream:
            print(point.series, point.time, point.v)

- **Each point once, in order per series.** Points are yielded as they arrive
  (the snapshot's first); a point whose ``seq`` is not above the last one
  yielded for its series is skipped, so a resumed snapshot that repeats a
  point, or a ``reset`` snapshot that holds points already yielded, yields
  only what is new. :meth:`Stream.window` is the rolling window per series.
- **Resume.** Every (re)connect sends ``Last-Event-ID`` with the last cursor;
  the server answers with exactly the missed points. A cursor it cannot
  honour gives a ``reset`` snapshot (counted in :attr:`Stream.resets`); the
  points after it continue.
- **Reconnects** after the stream ends (``max_lifetime``, ``server_shutdown``,
  ``slow_consumer``) or breaks: at least the server's ``retry:`` (httpx-sse
  reads the field), doubling per failure up to ``max_retry``, plus up to half
  as much again at random. ``429`` waits ``Retry-After``; ``401``, ``403`` and
  ``400`` raise :class:`Refused` (a callable ``token`` gets one more try
  with a fresh token first).
- **Credentials** go in ``Authorization: Bearer`` (keys and tokens alike), never
  in the URL: unlike an ``EventSource``, httpx can send headers. ``token`` may
  be a function asked at every (re)connect; :class:`TokenFromKey` is one that
  trades an API key for short-lived, possibly narrower tokens (``POST
  /v1/tokens``) and mints a fresh one before each expires. A stream open past
  its token's expiry is not cut; the next reconnect gets a fresh token.
- **Notices** (``event: notice``) are kept in :attr:`Stream.notices` and passed
  to ``on_notice``; :attr:`Stream.trouble` names the series whose upstream is
  down until their points come back.

This module imports nothing of the services.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

__all__ = ["Notice", "Point", "Refused", "Status", "Stream", "TokenFromKey", "decode_points"]

logger = logging.getLogger(__name__)

Status = Literal["connecting", "live", "reconnecting", "closed"]
Credential = str | Callable[[], str | Awaitable[str]]

#: Notices after which the server ends the stream; the client comes back after the retry.
_ENDING = frozenset({"max_lifetime", "server_shutdown", "slow_consumer"})
_DEFAULT_RETRY = 2.0


@dataclass(frozen=True, slots=True)
class Point:
    """One point: ``t`` in epoch ms (a bucket's start), ``v`` the value (a bucket's mean), ``seq`` its sequence."""

    series: str
    t: int
    v: float
    seq: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    count: int | None = None
    first: float | None = None
    last: float | None = None

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.t / 1000, UTC)

    @classmethod
    def of(cls, row: dict[str, Any]) -> Point:
        return cls(
            series=row["series"],
            t=int(row["t"]),
            v=row["v"],
            seq=int(row.get("seq", row["t"])),
            min=row.get("min"),
            max=row.get("max"),
            mean=row.get("mean"),
            count=row.get("count"),
            first=row.get("first"),
            last=row.get("last"),
        )


@dataclass(frozen=True, slots=True)
class Notice:
    """The server's ``notice`` event: ``code`` (``upstream_unavailable``, ``degraded``, ...), ``message``, the rest."""

    code: str
    message: str
    detail: dict[str, Any]

    @property
    def series(self) -> list[str]:
        return list(self.detail.get("series") or [])


class Refused(Exception):
    """The streamer refused the stream for a reason retrying will not fix (401, 403, 400, ...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _blocks(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for block in body["blocks"]:
        t = block["t0"]
        bucket = "min" in block
        for i, v in enumerate(block["v"]):
            if i:
                t += block["dt"][i - 1]
            row: dict[str, Any] = {
                "series": block["series"],
                "t": t,
                "v": v,
                "seq": block["seq"][i] if "seq" in block else t,
            }
            if bucket:
                row |= {key: block[key][i] for key in ("min", "max", "count", "first", "last")} | {"mean": v}
            yield row


def decode_points(body: dict[str, Any]) -> list[Point]:
    """The points of a ``snapshot`` or ``points`` body, whatever its format (d3, table, columns)."""
    if "points" in body:
        rows: Iterable[dict[str, Any]] = body["points"]
    elif "blocks" in body:
        rows = _blocks(body)
    elif "rows" in body:
        names = body["columns"]
        rows = (dict(zip(names, row, strict=True)) for row in body["rows"])
    else:
        rows = ()
    return [Point.of(row) for row in rows]


class TokenFromKey:
    """A ``token`` function from an API key: ``POST /v1/tokens`` with the key in ``X-API-Key``, the token kept
    until ``refresh_before`` seconds of its expiry (default a minute, or a tenth of a short lifetime).

    ``series`` narrows the tokens (globs within the key's scope), ``ttl`` sets their lifetime (``"15m"``).
    Raises :class:`Refused` when the streamer refuses the key or the scope.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        series: Sequence[str] | None = None,
        ttl: str | None = None,
        refresh_before: float | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/v1/tokens"
        self._api_key = api_key
        self.body: dict[str, Any] = {}
        if series is not None:
            self.body["series"] = list(series)
        if ttl is not None:
            self.body["ttl"] = ttl
        self.refresh_before = refresh_before
        self._client = client
        self._token = ""
        self._expires = 0.0
        self._lifetime = 0.0
        self._lock = asyncio.Lock()
        #: Tokens minted so far.
        self.minted = 0

    def forget(self) -> None:
        """Drop the token held (a connect with it was refused): the next call mints a fresh one."""
        self._token = ""

    async def __call__(self) -> str:
        async with self._lock:
            margin = self.refresh_before if self.refresh_before is not None else min(60.0, self._lifetime / 10)
            if self._token and time.time() < self._expires - margin:
                return self._token
            client = self._client or httpx.AsyncClient(timeout=10.0)
            try:
                reply = await client.post(self.url, headers={"X-API-Key": self._api_key}, json=self.body)
            finally:
                if self._client is None:
                    await client.aclose()
            if reply.status_code != 201:
                error = _error_of(reply)
                raise Refused(
                    reply.status_code, error.get("code", f"http_{reply.status_code}"), error.get("message", "")
                )
            body = reply.json()
            self._token = str(body["token"])
            self._expires = datetime.fromisoformat(str(body["expiresAt"]).replace("Z", "+00:00")).timestamp()
            self._lifetime = max(0.0, self._expires - time.time())
            self.minted += 1
            return self._token


def _error_of(response: httpx.Response) -> dict[str, str]:
    try:
        error = response.json().get("error", {})
    except (json.JSONDecodeError, AttributeError):
        return {}
    return {key: str(value) for key, value in error.items()} if isinstance(error, dict) else {}


async def _credential(value: Credential | None) -> str:
    if value is None:
        return ""
    got = value() if callable(value) else value
    if inspect.isawaitable(got):
        got = await got
    return str(got)


class Stream:
    """One live stream of many series; iterate it for points (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        *,
        series: Sequence[str] | None = None,
        resolution: str = "raw",
        window: str | None = None,
        max_points: int | None = None,
        format: Literal["d3", "columns", "table"] = "d3",
        token: Credential | None = None,
        api_key: str | None = None,
        last_event_id: str | None = None,
        max_retry: float = 30.0,
        client: httpx.AsyncClient | None = None,
        on_notice: Callable[[Notice], None] | None = None,
        keep_notices: int = 100,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.series = list(series) if series is not None else None
        self.params: dict[str, str] = {"resolution": resolution, "format": format}
        if self.series is not None:
            self.params["series"] = ",".join(self.series)
        if window is not None:
            self.params["window"] = window
        if max_points is not None:
            self.params["maxPoints"] = str(max_points)
        self.token = token
        self.api_key = api_key
        self.max_retry = max_retry
        self.on_notice = on_notice
        self.status: Status = "connecting"
        self.last_event_id = last_event_id or ""
        #: The server's retry, in seconds (from the ``retry:`` field).
        self.retry = _DEFAULT_RETRY
        self.meta: dict[str, Any] = {}
        self.notices: deque[Notice] = deque(maxlen=keep_notices)
        #: Series whose upstream is down (an ``upstream_unavailable`` notice), until their points return.
        self.trouble: set[str] = set()
        self.connections = 0
        self.resets = 0
        self._last_seq: dict[str, int] = {}
        self._window: dict[str, deque[Point]] = {}
        self._window_ms: int | None = None
        self._client = client
        self._owns_client = client is None
        self._fresh_token_tried = False

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.status = "closed"
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def window(self, series: str) -> list[Point]:
        """The points of ``series`` yielded within the last window (``meta.windowMs``) before its newest."""
        return list(self._window.get(series, ()))

    def __aiter__(self) -> AsyncIterator[Point]:
        return self.points()

    async def points(self) -> AsyncIterator[Point]:
        """Points as they arrive, each once, until :meth:`aclose` (or a :class:`Refused`)."""
        if self._client is None:
            # Reads wait longer than the 15 s heartbeat: a silent minute means a dead peer.
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=60.0))
        failures = 0
        while self.status != "closed":
            ending = False
            try:
                async for item in self._connection():
                    if isinstance(item, Point):
                        failures = 0
                        yield item
                    else:
                        ending = True
            except Refused:
                self.status = "closed"
                raise
            except _Retry as wait:
                failures += 1
                await self._pause(max(wait.seconds, self._delay(failures - 1)))
                continue
            except (httpx.TransportError, httpx.StreamError, ValueError) as error:
                logger.debug("stream broke: %r", error)
                ending = False
            if self._closed():
                return
            # An ending notice: the server's retry is the whole wait; a break counts as a failure.
            await self._pause(self._delay(0) if ending else self._delay(failures))
            if not ending:
                failures += 1

    def _delay(self, failures: int) -> float:
        base = min(self.max_retry, self.retry * 2.0**failures)
        return base * (1 + random.random() * 0.5)  # jitter, so a restarted server's clients spread out

    def _closed(self) -> bool:
        return self.status == "closed"  # a method: aclose() may change it while the loop waits

    async def _pause(self, seconds: float) -> None:
        if self.status != "closed":
            self.status = "reconnecting"
            await asyncio.sleep(seconds)

    async def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        secret = await _credential(self.token) or self.api_key or ""
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        return headers

    async def _connection(self) -> AsyncIterator[Point | Notice]:
        """One connection: its new points, then the notice that ended it (if one did)."""
        assert self._client is not None
        url = self.base_url + "/v1/stream"
        async with aconnect_sse(self._client, "GET", url, params=self.params, headers=await self._headers()) as source:
            response = source.response
            if response.status_code != 200:
                await self._refused(response)
            self.connections += 1
            async for event in source.aiter_sse():
                if event.retry is not None:
                    self.retry = event.retry / 1000
                if not event.data:
                    continue
                for item in self._handle(event):
                    yield item

    async def _refused(self, response: httpx.Response) -> None:
        await response.aread()
        error = _error_of(response)
        code, message = error.get("code", f"http_{response.status_code}"), error.get("message", "")
        status = response.status_code
        if status in (401, 403) and callable(self.token) and not self._fresh_token_tried:
            self._fresh_token_tried = True
            if isinstance(self.token, TokenFromKey):
                self.token.forget()
            raise _Retry(0.0)
        if status in (400, 401, 403, 404):
            raise Refused(status, code, message)
        retry_after = response.headers.get("retry-after", "")
        raise _Retry(float(retry_after) if retry_after.isdigit() else 0.0)

    def _handle(self, event: ServerSentEvent) -> Iterator[Point | Notice]:
        body = event.json()
        if event.event == "notice":
            notice = Notice(str(body.get("code", "")), str(body.get("message", "")), body)
            yield from self._notice(notice)
            return
        if event.event not in ("snapshot", "points"):
            return
        if event.id:
            self.last_event_id = event.id
        if event.event == "snapshot":
            self.status = "live"
            self._fresh_token_tried = False
            self.meta = body.get("meta", {})
            self._window_ms = self.meta.get("windowMs", self._window_ms)
            self.trouble.clear()
            if body.get("reset"):
                self.resets += 1
        for point in decode_points(body):
            self.trouble.discard(point.series)
            if point.seq <= self._last_seq.get(point.series, -1):
                continue
            self._last_seq[point.series] = point.seq
            self._keep(point)
            yield point

    def _notice(self, notice: Notice) -> Iterator[Notice]:
        self.notices.append(notice)
        if "retryMs" in notice.detail:
            self.retry = float(notice.detail["retryMs"]) / 1000
        if notice.code == "upstream_unavailable":
            self.trouble.update(notice.series)
        if self.on_notice is not None:
            self.on_notice(notice)
        if notice.code in _ENDING:
            yield notice

    def _keep(self, point: Point) -> None:
        held = self._window.setdefault(point.series, deque())
        held.append(point)
        if self._window_ms is not None:
            horizon = point.t - self._window_ms
            while held and held[0].t < horizon:
                held.popleft()


class _Retry(Exception):
    """Reconnect after at least ``seconds`` (``Retry-After``, or 0 for a fresh token)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds
