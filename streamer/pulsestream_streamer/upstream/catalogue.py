"""The catalogue as last heard from the generator: refreshed in the background and on demand, kept in outages.

``/v1/series`` and stream validation read :attr:`LiveCatalogue.current`.
Until the generator first answers ``ListSeries`` it is a placeholder holding
the configured series names; after that, a failed refresh keeps the last
known catalogue, so both keep working during an upstream outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from pulsestream_streamer.core.catalogue import Catalogue
from pulsestream_streamer.upstream.channels import Upstream
from pulsestream_streamer.upstream.errors import UpstreamError

__all__ = ["LiveCatalogue"]

logger = logging.getLogger(__name__)

#: Seconds between background refreshes once the generator answered, and while it has not yet.
_KNOWN_EVERY = 30.0
_UNKNOWN_EVERY = 2.0


class LiveCatalogue:
    """The current catalogue and the refresh that keeps it current."""

    def __init__(self, upstream: Upstream, fallback_series: Iterable[str]) -> None:
        self._upstream = upstream
        self.current = Catalogue.placeholder(fallback_series)
        self._fetched_at = 0.0
        self._asking = asyncio.Lock()  # concurrent refreshes share one ListSeries call

    def fallback(self, series: Iterable[str]) -> None:
        """New configured series (live settings): they stand in while the generator has never answered."""
        if not self.current.known:
            self.current = Catalogue.placeholder(series)

    async def refresh(self, max_age: float = 2.0) -> Catalogue:
        """The catalogue, asked anew when older than ``max_age`` seconds.

        Page loads stay fresh without every request costing an upstream call; when the
        generator cannot answer, the last known catalogue is kept.
        """
        loop = asyncio.get_running_loop()
        if self.current.known and loop.time() - self._fetched_at < max_age:
            return self.current
        async with self._asking:
            now = loop.time()
            if self.current.known and now - self._fetched_at < max_age:
                return self.current  # another caller just asked
            try:
                self.current = await self._upstream.list_series()
                self._fetched_at = now
            except UpstreamError as error:
                logger.debug("catalogue refresh failed: %s", error)
        return self.current

    async def knows(self, names: Iterable[str], max_age: float = 1.0) -> Catalogue:
        """The catalogue, asked anew (at most every ``max_age`` s) when it lacks one of ``names``.

        Published series appear in the generator's catalogue with their first point (or their
        declaration), between two background refreshes: a stream asking for one must not be
        refused as unknown for up to a refresh period.
        """
        current = self.current
        if current.known and any(name not in current.series for name in names):
            return await self.refresh(max_age=max_age)
        return current

    async def run(self) -> None:
        """Refresh in the background until cancelled."""
        while True:
            await self.refresh(max_age=0)
            await asyncio.sleep(_KNOWN_EVERY if self.current.known else _UNKNOWN_EVERY)
