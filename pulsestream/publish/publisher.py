"""``AsyncPublisher``: points from your code to a generator, batched, acknowledged, retried safely.

One sender task sends one batch at a time (``IngestService/Publish``) and
waits for its acknowledgement; a batch goes out when it holds ``batch_size``
points, when its oldest point has waited ``linger`` seconds, or on
:meth:`~AsyncPublisher.flush` / :meth:`~AsyncPublisher.close`. One batch in
flight keeps each series in time order on the wire, so a retry can never
land after a newer batch and be refused as out of order.

What happens when a batch is not acknowledged:

- UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (the generator is busy:
  INGEST_BUSY), and other transient codes: the *same* batch is sent again
  after a delay, the one a ``google.rpc.RetryInfo`` asks for, else an
  exponential backoff with full jitter (``retry_base`` doubling up to
  ``retry_cap``); the channel reconnects by itself meanwhile. Resending is
  safe: the points carry the timestamps stamped when they were recorded,
  and the generator stores a (series, timestamp) once.
- INVALID_ARGUMENT naming a point (BAD_POINT, SYNTHETIC_SERIES,
  UNDECLARED_SERIES) or RESOURCE_EXHAUSTED TOO_MANY_SERIES: nothing of the
  batch was stored, so the points the refusal names are dropped (a
  timestamp older than the retention: every point older than it; a series
  refused: all its points) and counted in ``stats.refused``, and the rest is
  sent again at once. TOO_MANY_POINTS: the batch is split.
- UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED: retrying cannot help.
  The publisher stops sending and keeps what it holds; :meth:`flush`,
  :meth:`close` and :meth:`record` raise :class:`PublishError`.

The buffer is bounded (``max_buffer`` points, the batch in flight
included); see :mod:`.buffer` for the overflow policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from pulsestream.publish.buffer import Buffer, Overflow, Point
from pulsestream.refusals import Reason, Refusal, refusal_of, retry_after_of
from pulsestream.v1 import ingest_pb2, ingest_pb2_grpc

__all__ = ["DEFAULT_TARGET", "AsyncPublisher", "PublishError", "Stats"]

logger = logging.getLogger(__name__)

DEFAULT_TARGET = "127.0.0.1:50051"

_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)
_FATAL = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED})
#: Refusals that name points to drop (nothing of the batch was stored).
_DROP = frozenset({Reason.BAD_POINT, Reason.SYNTHETIC_SERIES, Reason.UNDECLARED_SERIES, Reason.TOO_MANY_SERIES})


#: A batch taken from the buffer and its request, ready to send.
_Ready = tuple[list[Point], ingest_pb2.PublishRequest]


class PublishError(Exception):
    """The publisher cannot deliver what it holds (a wrong token, or points left when closing)."""


@dataclass
class Stats:
    """What the publisher did so far (points unless said otherwise)."""

    accepted: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    #: Dropped because the generator refused them (a bad point, a synthetic series, no room for the series).
    refused: int = 0
    #: Batches sent again after a transient failure.
    retries: int = 0
    #: Batches acknowledged.
    batches: int = 0

    @property
    def acknowledged(self) -> int:
        """Points the generator has (accepted, or already stored: duplicates)."""
        return self.accepted + self.duplicates


def _timestamp(ms: int) -> Timestamp:
    seconds, millis = divmod(ms, 1000)
    return Timestamp(seconds=seconds, nanos=millis * 1_000_000)


def encode(batch: Sequence[Point]) -> ingest_pb2.PublishRequest:
    """The ``PublishRequest`` for a batch."""
    request = ingest_pb2.PublishRequest()
    add = request.points.add
    for series, t, value in batch:
        point = add(series=series, value=value)
        stamp = point.timestamp
        stamp.seconds, millis = divmod(t, 1000)
        stamp.nanos = millis * 1_000_000
    return request


def _kept(batch: list[Point], refusal: Refusal) -> list[Point] | None:
    """What is left of a refused batch once the points the refusal names are dropped (``None``: unknown)."""
    metadata = refusal.metadata
    series = metadata.get("series")
    index = refusal.sequence("index")
    if refusal.reason == Reason.BAD_POINT and metadata.get("field") == "timestamp":
        retained_from = refusal.sequence("retained_from")
        if retained_from is not None:
            return [point for point in batch if point[1] >= retained_from]
        now = refusal.sequence("now")
        if now is not None:
            return [point for point in batch if point[1] <= now + 60_000 and point != _at(batch, index)]
    if (refusal.reason != Reason.BAD_POINT or metadata.get("field") == "series") and series is not None:
        return [point for point in batch if point[0] != series]
    if index is not None and index < len(batch):
        return batch[:index] + batch[index + 1 :]
    return None


def _at(batch: list[Point], index: int | None) -> Point | None:
    return batch[index] if index is not None and index < len(batch) else None


class AsyncPublisher:
    """Publishes points to a generator from an asyncio program (see the module docstring).

    >>> async with AsyncPublisher("127.0.0.1:50051") as publisher:
    ...     publisher.record("orders", 12.5)          # stamped now; never waits
    ...     await publisher.put("orders", 13.0)        # waits while the buffer is full
    ...     await publisher.flush()                    # until everything so far is acknowledged
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        batch_size: int = 1000,
        linger: float = 0.1,
        max_buffer: int = 100_000,
        overflow: Overflow = "drop-oldest",
        timeout: float = 10.0,
        retry_base: float = 0.1,
        retry_cap: float = 5.0,
        channel_options: Sequence[tuple[str, Any]] = (),
        _wake: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self.target = target
        self.batch_size = max(1, batch_size)
        self.linger = linger
        self.timeout = timeout
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.stats = Stats()
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._credentials = credentials
        self._options = [
            ("grpc.initial_reconnect_backoff_ms", max(1, round(retry_base * 1000))),
            ("grpc.min_reconnect_backoff_ms", max(1, round(retry_base * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, round(retry_cap * 1000))),
            *channel_options,
        ]
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._idle = asyncio.Event()
        # The sync Publisher records from other threads: it passes how to wake this loop from there.
        wake = self._wakeup.set if _wake is None else (lambda: _wake(self._wakeup.set))
        self.buffer = Buffer(max_buffer, overflow, wake)
        self.buffer.batch_size = self.batch_size
        self._channel: grpc.aio.Channel | None = None
        self._sender: asyncio.Task[None] | None = None
        self._flushing = 0
        self._closing = False
        self.failure: PublishError | None = None

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the channel and start the sender (``async with`` does this)."""
        if self._sender is not None:
            return
        if self._credentials is not None:
            self._channel = grpc.aio.secure_channel(self.target, self._credentials, options=self._options)
        else:
            self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
        self._stub = ingest_pb2_grpc.IngestServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._sender = asyncio.create_task(self._send_forever(), name="pulsestream-publisher")

    async def close(self, timeout: float = 10.0) -> None:
        """Send what is held (waiting up to ``timeout`` s), then stop; :class:`PublishError` if points are left."""
        if self._sender is None:
            return
        self._closing = True
        left = 0
        try:
            await self.flush(timeout)
        except (TimeoutError, PublishError):
            left = self.buffer.held
        finally:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
            if self._channel is not None:
                await self._channel.close()
        if self.failure is not None:
            raise self.failure
        if left:
            raise PublishError(f"closed with {left} points not acknowledged by {self.target}")

    async def __aenter__(self) -> AsyncPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- recording --------------------------------------------------------------------------------

    def record(self, series: str, value: float, t: int | None = None) -> bool:
        """Add a point (``t`` in epoch ms, default now) without waiting; ``False`` if the overflow policy dropped it."""
        if self.failure is not None:
            raise self.failure
        return self.buffer.record(series, value, t)

    async def put(self, series: str, value: float, t: int | None = None) -> None:
        """Add a point, waiting while the buffer is full (backpressure instead of the overflow policy)."""
        while True:
            if self.failure is not None:
                raise self.failure
            self._room.clear()  # before looking: the sender sets it when it frees room
            if self.buffer.put(series, value, t, timeout=0):
                return
            await self._room.wait()

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every point recorded so far is acknowledged (or dropped as refused)."""
        self._flushing += 1
        self._wakeup.set()
        try:
            async with asyncio.timeout(timeout):
                while self.buffer.held:
                    if self.failure is not None:
                        raise self.failure
                    self._idle.clear()
                    await self._idle.wait()
        finally:
            self._flushing -= 1
        if self.failure is not None:
            raise self.failure

    # --- sending ----------------------------------------------------------------------------------

    async def _next_batch(self) -> list[Point]:
        """Wait until a batch is due: full, lingered long enough, or asked for by flush/close."""
        buffer = self.buffer
        while True:
            waiting = len(buffer)
            if waiting and (waiting >= self.batch_size or self._flushing or self._closing):
                return buffer.take(self.batch_size)
            self._wakeup.clear()
            if waiting:
                due = buffer.oldest_at + self.linger - time.monotonic()
                if due <= 0:
                    return buffer.take(self.batch_size)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due):
                        await self._wakeup.wait()
            else:
                self._idle.set()
                await self._wakeup.wait()

    async def _send_forever(self) -> None:
        ready: _Ready | None = None
        while True:
            if ready is None:
                batch = await self._next_batch()
                ready = (batch, encode(batch))
            ready = await self._deliver(*ready)
            self._room.set()
            if not self.buffer.held:
                self._idle.set()

    async def _deliver(self, batch: list[Point], request: ingest_pb2.PublishRequest) -> _Ready | None:
        """Send ``batch`` until it is acknowledged, or what is left of it was refused; back off in between.

        While it is in flight, the next batch is taken and encoded if a full one is waiting (returned, to
        be sent next): the producer's encoding overlaps the generator's storing. It is given back, in
        order, whenever this one fails, so nothing newer ever overtakes a batch being retried.
        """
        failures = 0
        upcoming: _Ready | None = None
        while batch:
            call = self._stub.Publish(request, timeout=self.timeout, metadata=self._metadata)
            if upcoming is None and len(self.buffer) >= self.batch_size:
                await asyncio.sleep(0)  # let the call hand its request to gRPC before encoding the next one
                taken = self.buffer.take(self.batch_size)
                upcoming = (taken, encode(taken))
            try:
                reply = await call
            except grpc.aio.AioRpcError as error:
                if upcoming is not None:
                    self.buffer.giveback(upcoming[0])
                    upcoming = None
                batch, failures = await self._failed(batch, error, failures)
                request = encode(batch)
                continue
            stats = self.stats
            stats.accepted += reply.accepted
            stats.duplicates += reply.duplicates
            stats.out_of_order += reply.rejected_out_of_order
            stats.batches += 1
            self.buffer.settle(len(batch))
            return upcoming
        return upcoming

    async def _failed(self, batch: list[Point], error: grpc.aio.AioRpcError, failures: int) -> tuple[list[Point], int]:
        """The batch to send next after ``error`` (and the failure count), having waited as long as needed."""
        code = error.code()
        refusal = refusal_of(error)
        if refusal is not None and refusal.reason == Reason.TOO_MANY_POINTS:
            limit = max(1, (refusal.sequence("max_points") or len(batch) // 2) or 1)
            self.batch_size = self.buffer.batch_size = min(self.batch_size, limit)
            self.buffer.giveback(batch[limit:])
            return batch[:limit], failures
        if refusal is not None and refusal.reason in _DROP:
            kept = _kept(batch, refusal)
            kept = [] if kept is None or len(kept) == len(batch) else kept
            self._refused(len(batch) - len(kept), error)
            return kept, failures
        if code == grpc.StatusCode.INVALID_ARGUMENT:  # refused with no point named: nothing to salvage
            self._refused(len(batch), error)
            return [], failures
        if code in _FATAL or code not in _RETRYABLE:
            self.failure = PublishError(f"{self.target} refused the batch ({code.name}): {error.details()}")
            logger.error("publishing stopped: %s", self.failure)
            self._idle.set()
            self._room.set()
            await asyncio.Event().wait()  # hold the batch until close(); record/flush raise meanwhile
        failures += 1
        self.stats.retries += 1
        delay = retry_after_of(error)
        if delay is None:
            delay = random.uniform(0, min(self.retry_cap, self.retry_base * 2 ** min(failures, 30)))
        if failures == 1 or failures % 10 == 0:
            logger.warning(
                "publish failed (%s: %s), retrying in %.2fs (attempt %d)", code.name, error.details(), delay, failures
            )
        await asyncio.sleep(delay)
        return batch, failures

    def _refused(self, count: int, error: grpc.aio.AioRpcError) -> None:
        self.stats.refused += count
        self.buffer.settle(count)
        logger.warning("dropped %d points the generator refused: %s", count, error.details())
