"""``pulsestream.v1.RandomService``: the seed project's random numbers and strings, plus a stream.

These values are deliberately not reproducible (unlike the time-series
source): the service stands for "some other RPC" and answers from a
process-wide PRNG.
"""

from __future__ import annotations

import asyncio
import logging
import random
import string
from collections.abc import AsyncIterator

import grpc

from pulsestream import refusals
from pulsestream.refusals import Reason
from pulsestream.v1 import random_pb2, random_pb2_grpc
from pulsestream_generator.clock import now_ms
from pulsestream_generator.gate import Gate, GateClosed
from pulsestream_generator.metrics import GeneratorMetrics
from pulsestream_generator.wire import timestamp

logger = logging.getLogger(__name__)

DEFAULT_RANGE = (0, 100)
DEFAULT_LENGTH = 16
MAX_LENGTH = 4096
MIN_INTERVAL_S = 0.010
MAX_INTERVAL_S = 3600.0
DEFAULT_INTERVAL_S = 1.0
_ALPHABET = string.ascii_letters + string.digits


class _Invalid(ValueError):
    """A bad field; ``str()`` starts with the field's name, ``field`` names it as data."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _bad_argument(field: str, message: str) -> grpc.Status:
    return refusals.status(Reason.BAD_ARGUMENT, message, field=field)


#: Numbers are not resumable, so a drained stream carries no cursor.
_DRAINING = refusals.status(Reason.SERVER_DRAINING, "server draining, reconnect")


def _bounds(minimum: int, maximum: int) -> tuple[int, int]:
    if minimum == 0 and maximum == 0:
        return DEFAULT_RANGE
    if minimum > maximum:
        raise _Invalid("max", f"max: must be >= min (got min={minimum}, max={maximum})")
    return minimum, maximum


class RandomServicer(random_pb2_grpc.RandomServiceServicer):
    """Random integers and strings, one-off or streamed."""

    def __init__(self, gate: Gate, metrics: GeneratorMetrics) -> None:
        self.gate = gate
        self.metrics = metrics
        self._random = random.Random()

    async def GetNumber(
        self, request: random_pb2.NumberRequest, context: grpc.aio.ServicerContext
    ) -> random_pb2.NumberResponse:
        try:
            low, high = _bounds(request.min, request.max)
        except _Invalid as error:
            await context.abort_with_status(_bad_argument(error.field, str(error)))
        return random_pb2.NumberResponse(
            value=self._random.randint(low, high), sequence=0, timestamp=timestamp(now_ms())
        )

    async def GetString(
        self, request: random_pb2.StringRequest, context: grpc.aio.ServicerContext
    ) -> random_pb2.StringResponse:
        length = request.length or DEFAULT_LENGTH
        if length > MAX_LENGTH:
            await context.abort_with_status(
                _bad_argument("length", f"length: at most {MAX_LENGTH} characters (got {length})")
            )
        return random_pb2.StringResponse(value="".join(self._random.choices(_ALPHABET, k=length)))

    async def StreamNumbers(
        self, request: random_pb2.StreamNumbersRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[random_pb2.NumberResponse]:
        try:
            low, high = _bounds(request.min, request.max)
        except _Invalid as error:
            await context.abort_with_status(_bad_argument(error.field, str(error)))
        interval = DEFAULT_INTERVAL_S
        if request.HasField("interval"):
            interval = request.interval.seconds + request.interval.nanos / 1e9
            if not MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S:
                await context.abort_with_status(
                    _bad_argument("interval", f"interval: must be between 10ms and 1h (got {interval}s)")
                )
        peer = context.peer()
        logger.debug("number stream opened", extra={"peer": peer, "count": request.count, "interval": interval})
        self.metrics.stream_starts.labels("StreamNumbers").inc()
        sequence = 0
        reason = "cancelled"
        try:
            with self.gate.admit():
                while request.count == 0 or sequence < request.count:
                    if sequence:
                        try:
                            async with asyncio.timeout(interval):
                                await self.gate.draining.wait()
                        except TimeoutError:
                            pass
                        else:
                            raise GateClosed("server draining, reconnect")
                    sequence += 1
                    yield random_pb2.NumberResponse(
                        value=self._random.randint(low, high), sequence=sequence, timestamp=timestamp(now_ms())
                    )
            reason = "completed"
        except GateClosed:
            reason = "draining"
        finally:
            self.metrics.stream_ends.labels("StreamNumbers", reason).inc()
            logger.debug("number stream closed", extra={"peer": peer, "reason": reason, "sent": sequence})
        if reason == "draining":
            await context.abort_with_status(_DRAINING)
