"""Per-client rate limits: a token bucket for requests and a cap on concurrent streams.

Pure logic: no I/O, the clock is injected, so the limits are tested exactly.

Guarantees:

- Requests: each client has a bucket of ``burst`` tokens refilled at
  ``requests_per_second``; a request takes one token or is refused with the
  seconds until one is there. Over any interval of length ``t`` (within one
  configuration) a client gets at most ``burst + requests_per_second * t``
  requests through.
- Streams: a client holds at most ``max_streams_per_client`` open streams;
  :meth:`RateLimiter.open_stream` refuses the next one until one closes.
- :meth:`RateLimiter.configure` applies new limits live: the rate and the
  bucket size at once (a bucket holding more than a lowered burst is trimmed;
  a raised burst adds its extra tokens at once, so raising a limit relieves
  throttled clients immediately), the stream cap to streams opened from then
  on (open streams are not cut).
- Bounded memory: a client whose bucket is full again and who holds no stream
  is indistinguishable from a new one and is forgotten; beyond ``max_clients``
  the least recently seen client without open streams is forgotten too
  (it starts again with a full bucket, which only ever errs on the lenient side).
- Retry-After values are whole seconds, at least 1 (HTTP ``delay-seconds``).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pulsestream.spec import RateLimit

#: Retry-After for a refused stream: when a stream closes is unknown, so ask for a short, polite wait.
STREAM_RETRY_AFTER = 5

_EPSILON = 1e-9


@dataclass
class _Client:
    tokens: float
    updated: float
    streams: int = 0


def retry_after_header(seconds: float) -> str:
    """``seconds`` as an HTTP ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


class RateLimiter:
    """Token buckets and stream counts for every client seen recently."""

    def __init__(
        self,
        limits: RateLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        self.limits = limits or RateLimit()
        self._clock = clock
        self.max_clients = max_clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def __len__(self) -> int:
        """Clients currently remembered."""
        return len(self._clients)

    def configure(self, limits: RateLimit) -> None:
        """Apply new limits now (see the module's guarantees)."""
        now = self._clock()
        grown = max(0, limits.burst - self.limits.burst)
        for state in self._clients.values():
            self._refill(state, now)  # tokens earned so far count at the old rate
            state.tokens = min(state.tokens + grown, float(limits.burst))
        self.limits = limits

    def _refill(self, state: _Client, now: float) -> None:
        elapsed = max(0.0, now - state.updated)
        state.tokens = min(float(self.limits.burst), state.tokens + elapsed * self.limits.requests_per_second)
        state.updated = now

    def _client(self, client: str, now: float) -> _Client:
        state = self._clients.get(client)
        if state is None:
            state = _Client(tokens=float(self.limits.burst), updated=now)
            self._clients[client] = state
            self._evict(now)
        else:
            self._clients.move_to_end(client)
            self._refill(state, now)
        return state

    def acquire(self, client: str) -> float:
        """Take a request token for ``client``: ``0.0`` if allowed, else the seconds to wait."""
        now = self._clock()
        state = self._client(client, now)
        if state.tokens >= 1.0 - _EPSILON:  # a client that waited exactly Retry-After is let in despite float rounding
            state.tokens = max(0.0, state.tokens - 1.0)
            return 0.0
        return (1.0 - state.tokens) / self.limits.requests_per_second

    def open_stream(self, client: str) -> float:
        """Count a new stream of ``client``: ``0.0`` if allowed (then :meth:`close_stream` it), else seconds to wait."""
        state = self._client(client, self._clock())
        if state.streams >= self.limits.max_streams_per_client:
            return float(STREAM_RETRY_AFTER)
        state.streams += 1
        return 0.0

    def close_stream(self, client: str) -> None:
        """A stream of ``client`` ended."""
        state = self._clients.get(client)
        if state is not None and state.streams > 0:
            state.streams -= 1

    def streams(self, client: str) -> int:
        """Open streams of ``client``."""
        state = self._clients.get(client)
        return state.streams if state else 0

    def _idle(self, state: _Client, now: float) -> bool:
        if state.streams:
            return False
        refill = (self.limits.burst - state.tokens) / self.limits.requests_per_second
        return now - state.updated >= refill

    def _evict(self, now: float) -> None:
        # Oldest first: a client moves to the end whenever it is seen, so the front is the least recently seen.
        # Stops at the first client worth keeping, so adding a client costs O(1) amortised.
        skipped = 0
        while len(self._clients) - skipped > 1:
            name, state = next(iter(self._clients.items()))
            if self._idle(state, now):
                del self._clients[name]
            elif len(self._clients) > self.max_clients:
                if state.streams:  # its stream count must stay exact: keep it, look further
                    self._clients.move_to_end(name)
                    skipped += 1
                else:
                    del self._clients[name]
            else:
                break
