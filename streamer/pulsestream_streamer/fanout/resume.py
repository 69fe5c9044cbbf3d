"""Resume by cursor: whether a ``Last-Event-ID`` can be honoured exactly, refilling history when needed.

A cursor holds the view (resolution or built width) and the last delivered
sequence of each series of a stream. It is honoured when, per series, the
position can be continued in the stream's view
(:func:`~pulsestream_streamer.core.ladder.continuation`: the same view, a view
whose width divides the cursor's, or, with the cursor's own view at hand to
fill the seam, a coarser view whose width is a multiple of it), the ring holds
the points after it or can be refilled from the generator's history first (a
restarted streamer, another replica's cursor), and the feed has caught up with
it (a cursor from a replica that is ahead). Anything else is refused with a
reason, and the stream starts with a ``"reset": true`` snapshot: never a
silent hole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from pulsestream_streamer.core import ladder
from pulsestream_streamer.core.clock import epoch_ms
from pulsestream_streamer.core.request import StreamRequest
from pulsestream_streamer.fanout.feed import Feed
from pulsestream_streamer.fanout.topic import Source
from pulsestream_streamer.observability import tracing

__all__ = ["Resume", "continuations", "still_covered", "usable_cursor"]

#: Per series, how the stream continues from the cursor (see :func:`continuations`).
Resume = dict[str, ladder.Continuation]


def continuations(request: StreamRequest, seams: Mapping[str, Source] | None = None) -> tuple[Resume | None, str]:
    """How each series continues from the request's cursor in the request's view, or None and why not.

    A seam (the cursor's width does not line up with the view's) needs ``seams``, the sources
    of the cursor's own view, to be read from.
    """
    cursor = request.cursor
    if cursor is None:
        return None, request.cursor_error or "no cursor"
    if set(cursor.positions) != set(request.series):
        return None, "cursor is for other series"
    plans: Resume = {}
    for series, position in cursor.positions.items():
        plan = ladder.continuation(position, cursor.bucket_ms, request.view.bucket_ms)
        if plan is None or (plan.seam is not None and (not seams or series not in seams)):
            return None, f"cursor of view {cursor.resolution} cannot continue in view {request.view.name}"
        plans[series] = plan
    return plans, ""


def _seams_complete(plans: Resume, seams: Mapping[str, Source] | None) -> bool:
    """Every seam's points are in its ring: its view has closed everything before the seam's end."""
    for series, plan in plans.items():
        if plan.seam is None or seams is None:
            continue
        source = seams[series]
        if source.ring.last_seq + (source.bucket_ms or 1) < plan.seam[1]:
            return False
    return True


async def usable_cursor(
    feed: Feed,
    request: StreamRequest,
    *,
    retention_ms: int,
    address: str,
    refill_timeout: float,
    catch_up_timeout: float,
    next_flush: Callable[[float], Awaitable[None]],
    seams: Mapping[str, Source] | None = None,
) -> tuple[Resume | None, str]:
    """How the request's cursor is honoured exactly (refilling rings if needed), or None and why not.

    ``retention_ms`` is the generator's (0: unknown); ``refill_timeout`` bounds each refill from the
    generator, ``catch_up_timeout`` the wait for a feed behind the cursor; ``next_flush`` waits for
    the feed's next flush.
    """
    plans, reason = continuations(request, seams)
    if plans is None:
        return None, reason
    now_ms = epoch_ms()
    for topic in feed.topics:
        position = plans[topic.series].after
        if not position:
            continue
        if retention_ms and position < now_ms - retention_ms:
            return None, "cursor older than the generator's retention"
        if topic.ring.covers(position) or position > topic.ring.last_seq:
            continue
        with tracing.refill_span(topic.series, topic.resolution, position, address) as span:
            refilled = await topic.refill(position, refill_timeout)
            span.set_attribute("pulsestream.refilled", refilled)
        if not refilled:
            return None, f"history after {position} of {topic.series} is not available"
    # A cursor from a replica that is ahead of us (or a seam not closed yet): wait a little for our feed.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + catch_up_timeout
    while any(plans[s].after > feed.flushed.get(s, 0) for s in feed.series) or not _seams_complete(plans, seams):
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None, "cursor is ahead of this streamer"
        await next_flush(min(remaining, 0.5))
    return plans, ""


def still_covered(feed: Feed, plans: Resume, seams: Mapping[str, Source] | None = None) -> bool:
    """Synchronous: every ring still holds every point the snapshot needs after its position.

    :func:`usable_cursor` awaits (refills, catch-up) while topics keep running: a ring may
    have trimmed, or been cleared, under a cursor it covered then. Checked again with no
    await until the snapshot is planned, so "resumed" never hides a hole.
    """
    for topic in feed.topics:
        plan = plans[topic.series]
        position = plan.after
        if position and position < feed.flushed.get(topic.series, 0) and not topic.ring.covers(position):
            return False
        if plan.seam is not None and seams is not None:
            ring = seams[topic.series].ring
            start = plan.seam[0] - 1
            floor = ring.floor
            if floor is None or start < floor:
                return False
    return _seams_complete(plans, seams)
