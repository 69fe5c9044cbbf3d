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

    def fallback(self, series: Iterable[str]) -> None:
        """New configured series (live settings): they stand in while the generator has never answered."""
        if not self.current.known:
            self.current = Catalogue.placeholder(series)

    async def refresh(self, max_age: float = 2.0) -> Catalogue:
        """The catalogue, asked anew when older than ``max_age`` seconds.

        Page loads stay fresh without every request costing an upstream call; when the
        generator cannot answer, the last known catalogue is kept.
        """
        now = asyncio.get_running_loop().time()
        if self.current.known and now - self._fetched_at < max_age:
            return self.current
        try:
            self.current = await self._upstream.list_series()
            self._fetched_at = now
        except UpstreamError as error:
            logger.debug("catalogue refresh failed: %s", error)
        return self.current

    async def run(self) -> None:
        """Refresh in the background until cancelled."""
        while True:
            await self.refresh(max_age=0)
            await asyncio.sleep(_KNOWN_EVERY if self.current.known else _UNKNOWN_EVERY)
