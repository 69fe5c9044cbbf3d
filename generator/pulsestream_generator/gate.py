"""Admission of server streams, closed when draining starts.

Every streaming RPC runs inside :meth:`Gate.admit`; once :meth:`Gate.close`
is called new streams are refused (the servicer answers UNAVAILABLE) and
:meth:`Gate.wait_idle` lets shutdown wait, for a bounded time, until the
streams in flight have ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class GateClosed(Exception):
    """The server is draining and takes no new streams."""


class Gate:
    """Counts streams in flight; refuses new ones once closed."""

    def __init__(self) -> None:
        self.draining = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    @property
    def closed(self) -> bool:
        return self.draining.is_set()

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for one stream; raise :class:`GateClosed` when draining."""
        if self.closed:
            raise GateClosed("server draining, reconnect")
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    def close(self) -> None:
        self.draining.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no stream is in flight; ``False`` if ``timeout`` seconds passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
