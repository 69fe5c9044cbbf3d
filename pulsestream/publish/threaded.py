"""``Publisher``: the same publisher for code without an event loop (scripts, threads, web frameworks).

An :class:`~.publisher.AsyncPublisher` runs on an event loop in a
background thread the ``Publisher`` owns; :meth:`Publisher.record` and
:meth:`Publisher.put` go straight into its thread-safe buffer (no loop
round trip per point), so any thread may record. :meth:`Publisher.close`
(or leaving ``with``) sends what is held, stops the loop and joins the
thread; a publisher still open when the interpreter exits is closed then,
with a short timeout.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from typing import Any

from pulsestream.publish.publisher import DEFAULT_TARGET, AsyncPublisher, PublishError, Stats

__all__ = ["Publisher"]

#: How long a publisher left open gets to send what it holds when the interpreter exits.
_AT_EXIT_TIMEOUT = 5.0


class Publisher:
    """Publishes points to a generator from synchronous code; options as :class:`AsyncPublisher`'s.

    >>> with Publisher("127.0.0.1:50051") as publisher:
    ...     publisher.record("orders", 12.5)
    ...     publisher.flush()
    """

    def __init__(self, target: str = DEFAULT_TARGET, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._async: AsyncPublisher | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._main, args=(target, options), name="pulsestream-publisher", daemon=True
        )
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        self._closed = False
        atexit.register(self._at_exit)

    def _main(self, target: str, options: dict[str, Any]) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            self._async = AsyncPublisher(target, _wake=loop.call_soon_threadsafe, **options)
            loop.run_until_complete(self._async.start())
        except BaseException as error:  # a bad option: raised in the caller's thread by __init__
            self._error = error
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    @property
    def _publisher(self) -> AsyncPublisher:
        assert self._async is not None
        return self._async

    @property
    def stats(self) -> Stats:
        return self._publisher.stats

    @property
    def held(self) -> int:
        """Points recorded and not yet acknowledged."""
        return self._publisher.buffer.held

    @property
    def dropped(self) -> int:
        """Points the overflow policy dropped."""
        return self._publisher.buffer.dropped

    def record(self, series: str, value: float, t: int | None = None) -> bool:
        """Add a point (``t`` in epoch ms, default now) without waiting; ``False`` if the overflow policy dropped it."""
        return self._publisher.record(series, value, t)

    def put(self, series: str, value: float, t: int | None = None, timeout: float | None = None) -> bool:
        """Add a point, waiting up to ``timeout`` s (``None``: as long as it takes) for room in the buffer."""
        publisher = self._publisher
        if publisher.failure is not None:
            raise publisher.failure
        return publisher.buffer.put(series, value, t, timeout)

    def _call(self, coroutine: Any, timeout: float | None) -> None:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        future.result(None if timeout is None else timeout + 1.0)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every point recorded so far is acknowledged; ``TimeoutError`` after ``timeout`` s."""
        self._call(self._publisher.flush(timeout), timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is held (up to ``timeout`` s), then stop; :class:`PublishError` if points are left."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        try:
            self._call(self._publisher.close(timeout), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def _at_exit(self) -> None:
        with contextlib.suppress(PublishError, TimeoutError):
            self.close(_AT_EXIT_TIMEOUT)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
