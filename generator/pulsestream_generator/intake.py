"""Flow control for ingest: a bounded queue of batches and the one task that stores them.

Every ``Publish`` and OTLP ``Export`` call hands its request to the
:class:`Intake` and awaits the answer. One task (:meth:`Intake.run`) takes
the batches in arrival order and stores them one at a time, yielding to the
event loop between two, so subscribers' writes, synthetic ticks and new calls
keep going while producers push hard.

How a producer faster than the generator is slowed:

- Each call is answered only once its batch is stored, and the producer
  library keeps one batch in flight, so a producer never runs further ahead
  than one batch: it waits for its answers.
- Calls the generator has not yet taken wait in gRPC's transport, bounded by
  HTTP/2 flow control and ``GENERATOR_MAX_CONCURRENT_STREAMS`` per
  connection; ``grpc.aio`` takes one new call per turn of the event loop, so
  they never pile up in this process either.
- At most ``GENERATOR_INGEST_MAX_IN_FLIGHT`` batches are taken (queued or
  being stored) at once; they add up when the store waits (a shared backend
  awaiting its server) and many producers call at once. One more is refused
  at once with RESOURCE_EXHAUSTED (INGEST_BUSY) and a
  ``google.rpc.RetryInfo``: the time the queue needs to drain at the recent
  pace (between :data:`MIN_RETRY_S` and :data:`MAX_RETRY_S`), which the
  producer library and OTLP exporters wait before resending the same batch.
  The memory the generator holds for batches stays bounded (in-flight batches
  times ``GENERATOR_INGEST_MAX_MESSAGE_SIZE``).

Draining (SIGTERM): new batches are refused with UNAVAILABLE, and those
still queued are answered UNAVAILABLE unstored, so their producers resend
them elsewhere or after the restart; the batch being stored completes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["MAX_RETRY_S", "MIN_RETRY_S", "Busy", "Closed", "Intake"]

logger = logging.getLogger(__name__)

#: Bounds of the RetryInfo delay a busy intake asks for (seconds).
MIN_RETRY_S = 0.01
MAX_RETRY_S = 1.0

Job = TypeVar("Job")
Result = TypeVar("Result")


class Busy(Exception):
    """The queue is full: resend the same batch after :attr:`retry_after` seconds."""

    def __init__(self, limit: int, retry_after: float) -> None:
        super().__init__(
            f"{limit} ingest batches already in flight (GENERATOR_INGEST_MAX_IN_FLIGHT); retry in "
            f"{retry_after * 1000:.0f} ms"
        )
        self.limit = limit
        self.retry_after = retry_after


class Closed(Exception):
    """The generator is draining: the batch was not stored; resend it elsewhere or later."""


class Intake(Generic[Job, Result]):
    """A bounded FIFO of jobs, processed one at a time by :meth:`run`."""

    def __init__(self, process: Callable[[Job], Awaitable[Result]], limit: int) -> None:
        self._process = process
        self.limit = limit
        self._queue: deque[tuple[Job, asyncio.Future[Result]]] = deque()
        self._ready = asyncio.Event()
        self._busy = 0
        self._closed = False
        #: Recent seconds per batch (exponentially weighted), for the retry delay.
        self._pace = 0.001

    @property
    def in_flight(self) -> int:
        return len(self._queue) + self._busy

    def retry_after(self) -> float:
        """How long a refused producer should wait: the time the queue needs to drain at the recent pace."""
        return min(MAX_RETRY_S, max(MIN_RETRY_S, self.in_flight * self._pace))

    async def submit(self, job: Job) -> Result:
        """Queue ``job`` and wait for its result; raise :class:`Busy` or :class:`Closed` at once when refused."""
        if self._closed:
            raise Closed
        if self.in_flight >= self.limit:
            raise Busy(self.limit, self.retry_after())
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((job, future))
        self._ready.set()
        return await future

    def close(self) -> None:
        """Refuse new jobs and answer the queued ones with :class:`Closed` (the current one completes)."""
        self._closed = True
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(Closed())

    async def run(self) -> None:
        """Process jobs until cancelled."""
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            job, future = self._queue.popleft()
            if future.done():  # the caller went away (cancelled call): nothing to store for it
                continue
            self._busy = 1
            started = time.perf_counter()
            try:
                result = await self._process(job)
            except Exception as error:  # a bad batch (refused) or a fault: the caller decides
                if not future.done():
                    future.set_exception(error)
            else:
                if not future.done():
                    future.set_result(result)
            finally:
                self._busy = 0
                self._pace = 0.8 * self._pace + 0.2 * (time.perf_counter() - started)
            await asyncio.sleep(0)  # let queued calls and subscribers' writes run between two batches
