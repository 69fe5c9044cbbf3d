"""Resume by cursor: whether a ``Last-Event-ID`` can be honoured exactly, refilling history when needed.

A cursor holds the last delivered sequence of each series of a stream. It is
honoured when every series' ring holds the points after it, or can be
refilled from the generator's history first (a restarted streamer, another
replica's cursor), and the feed has caught up with it (a cursor from a
replica that is ahead). Anything else is refused with a reason, and the
stream starts with a ``"reset": true`` snapshot: never a silent hole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pulsestream_streamer.core.clock import epoch_ms
from pulsestream_streamer.core.request import StreamRequest
from pulsestream_streamer.fanout.feed import Feed
from pulsestream_streamer.observability import tracing

__all__ = ["still_covered", "usable_cursor"]


async def usable_cursor(
    feed: Feed,
    request: StreamRequest,
    *,
    retention_ms: int,
    address: str,
    refill_timeout: float,
    catch_up_timeout: float,
    next_flush: Callable[[float], Awaitable[None]],
) -> tuple[bool, str]:
    """Whether the request's cursor can be honoured exactly (refilling rings if needed), and if not why.

    ``retention_ms`` is the generator's (0: unknown); ``refill_timeout`` bounds each refill from the
    generator, ``catch_up_timeout`` the wait for a feed behind the cursor; ``next_flush`` waits for
    the feed's next flush.
    """
    cursor = request.cursor
    if cursor is None:
        return False, request.cursor_error or "no cursor"
    if cursor.resolution != request.resolution or set(cursor.positions) != set(request.series):
        return False, "cursor is for another resolution or series"
    now_ms = epoch_ms()
    for topic in feed.topics:
        position = cursor.positions[topic.series]
        if not position:
            continue
        if retention_ms and position < now_ms - retention_ms:
            return False, "cursor older than the generator's retention"
        if topic.ring.covers(position) or position > topic.ring.last_seq:
            continue
        with tracing.refill_span(topic.series, topic.resolution, position, address) as span:
            refilled = await topic.refill(position, refill_timeout)
            span.set_attribute("pulsestream.refilled", refilled)
        if not refilled:
            return False, f"history after {position} of {topic.series} is not available"
    # A cursor from a replica that is ahead of us: wait a little for our feed to catch up.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + catch_up_timeout
    while any(cursor.positions[s] > feed.flushed.get(s, 0) for s in feed.series):
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False, "cursor is ahead of this streamer"
        await next_flush(min(remaining, 0.5))
    return True, ""


def still_covered(feed: Feed, request: StreamRequest) -> bool:
    """Synchronous: every series' ring still holds every point after the cursor's position.

    :func:`usable_cursor` awaits (refills, catch-up) while topics keep running: a ring may
    have trimmed, or been cleared, under a cursor it covered then. Checked again with no
    await until the snapshot is taken, so "resumed" never hides a hole.
    """
    assert request.cursor is not None
    for topic in feed.topics:
        position = request.cursor.positions[topic.series]
        if position and position < feed.flushed.get(topic.series, 0) and not topic.ring.covers(position):
            return False
    return True
