"""Keeping one topic subscribed: reconnect, failover between replicas, resume by sequence.

:func:`follow` keeps one topic's stream alive: on failure it tells the topic
(which tells its clients with an event), moves to the next address, waits
with exponential backoff and full jitter under a cap, and resubscribes
``after_sequence`` = the last sequence the topic holds, so the browser sees no
gap and no duplicate. ``RESOURCE_EXHAUSTED`` (the generator dropped us for
being slow) and a gap found by the sequencer resubscribe at once; a start the
generator no longer holds restarts from the window and reports the hole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from pulsestream.refusals import Reason
from pulsestream_streamer.core.backoff import Backoff
from pulsestream_streamer.core.samples import Sample
from pulsestream_streamer.upstream.channels import Upstream, samples_of
from pulsestream_streamer.upstream.errors import Start, UpstreamError

__all__ = ["TopicSink", "follow"]

logger = logging.getLogger(__name__)


class TopicSink(Protocol):
    """What :func:`follow` needs from a topic."""

    series: str
    resolution: str

    def resume_point(self) -> Start:
        """Where to (re)subscribe: after the last held sequence, or the window start when empty."""
        ...

    def deliver(self, samples: list[Sample]) -> bool:
        """Take new points; return False when the sequencer found a gap (resubscribe now)."""
        ...

    def upstream_down(self, code: str, message: str) -> None: ...

    def upstream_up(self) -> None: ...

    def start_lost(self, message: str) -> None:
        """The generator no longer holds the resume point: forget it, restart from the window."""
        ...


async def follow(upstream: Upstream, topic: TopicSink, on_reconnect: Callable[[], None] | None = None) -> None:
    """Keep ``topic`` subscribed until cancelled (reconnect, failover, resume). Never returns normally."""
    follower = _Follower(upstream, topic)
    first = True
    while True:
        if not first and on_reconnect is not None:
            on_reconnect()
        first = False
        address = upstream.address
        outage = await follower.attempt(address)
        if outage is not None:
            await follower.recover(address, outage)


class _Follower:
    """One topic's subscription attempts: what :func:`follow` remembers between them."""

    #: Times in a row a start the generator no longer holds restarts the topic, before it counts as an outage.
    MAX_START_LOST = 3

    def __init__(self, upstream: Upstream, topic: TopicSink) -> None:
        settings = upstream.settings
        self.upstream = upstream
        self.topic = topic
        self.backoff = Backoff(settings.reconnect_base.seconds, settings.reconnect_cap.seconds)
        self.rejected = 0

    async def attempt(self, address: str) -> UpstreamError | None:
        """One ``Subscribe`` call, delivering until it ends: the outage that ended it, or None to resubscribe now."""
        topic = self.topic
        start = topic.resume_point()
        logger.debug(
            "upstream subscribe",
            extra={"series": topic.series, "resolution": topic.resolution, "address": address, "after": start.after},
        )
        stream = self.upstream.subscribe([topic.series], topic.resolution, start, address)
        up = False
        try:
            async for response in stream:
                if not up:
                    up = True
                    self.rejected = 0
                    self.backoff.reset()
                    topic.upstream_up()
                if not topic.deliver(samples_of(response, topic.series)):
                    logger.info("sequence gap, resubscribing", extra={"series": topic.series})
                    return None
        except UpstreamError as error:
            return await self._refused(error, up)
        except Exception as error:  # a bug or a protocol surprise: log it, treat as an outage, keep going
            logger.exception("upstream stream failed", extra={"series": topic.series})
            return UpstreamError("INTERNAL", str(error))
        finally:
            await stream.aclose()
        return UpstreamError("UNAVAILABLE", f"stream from {address} ended")

    async def _refused(self, error: UpstreamError, up: bool) -> UpstreamError | None:
        """A call that failed: resubscribe at once (dropped as slow, start lost), or an outage."""
        if error.code == "RESOURCE_EXHAUSTED":
            logger.info("upstream dropped us as slow, resubscribing", extra={"series": self.topic.series})
            if not up:  # dropped again before a single message: do not spin
                await asyncio.sleep(self.backoff.next())
            return None
        if error.code == "INVALID_ARGUMENT" and _history_lost(error) and self.rejected < self.MAX_START_LOST:
            # The generator no longer holds our start (restarted with less history, clocks apart).
            self.rejected += 1
            self.topic.start_lost(str(error))
            return None
        return error

    async def recover(self, address: str, outage: UpstreamError) -> None:
        """Tell the topic, move to the next replica if this one is at fault, and wait out the backoff."""
        self.topic.upstream_down(outage.code, str(outage))
        if _address_at_fault(outage):
            self.upstream.failover(address)
        delay = self.backoff.next()
        logger.info(
            "upstream down, retrying in %.2fs: %s %s",
            delay,
            outage.code,
            outage,
            extra={"series": self.topic.series, "address": address},
        )
        await asyncio.sleep(delay)


def _history_lost(error: UpstreamError) -> bool:
    """The generator refused our start because it no longer holds the points after it.

    Only this refusal means "restart from the window"; other INVALID_ARGUMENTs (a resume point in
    the future on a replica whose clock is behind, a series removed from the settings) keep what
    the topic holds and are retried as outages, so clients get no duplicates and no false hole.
    Matched by the refusal's reason (ErrorInfo), never by its message.
    """
    return error.reason == Reason.HISTORY_NOT_RETAINED


def _address_at_fault(error: UpstreamError) -> bool:
    """Whether another replica might do better: not for a series every replica lacks (removed, unknown)."""
    if error.code == "NOT_FOUND":
        return False
    return error.reason not in (Reason.SERIES_REMOVED, Reason.UNKNOWN_SERIES)
