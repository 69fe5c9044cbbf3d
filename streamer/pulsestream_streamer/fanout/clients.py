"""Connected SSE clients: ids, bounded queues, slow-consumer handling, heartbeats and lifetime limits.

Each client has a queue of *references* to shared, pre-encoded frames. The
feed appends to it once per flush; the client's writer (the HTTP layer's
:func:`~pulsestream_streamer.http.stream.write_stream`) sends everything
queued as one write. When the connection is idle, a flush may skip the queue
and hand the pre-framed chunk straight to the connection (:class:`DirectWrite`,
which the HTTP layer provides for the servers it knows). A client whose queue passes
``buffer_size`` events or ``client_max_queue_bytes`` bytes is a slow consumer:
its queue is dropped (memory released at once), it gets one ``error`` event
``{"code": "slow_consumer"}`` and its stream ends, so the browser's
``EventSource`` reconnects with ``Last-Event-ID`` and resumes exactly where
its last delivered event left off. If its socket accepts nothing at all, the
connection is aborted instead. Nobody else waits for it: appending to a queue
never blocks.

Before that, a client whose queue passes half of either bound is *behind*:
the ``on_behind`` callback (the hub's) may move it to a coarser view
(degradation, issue 15), dropping its queue and continuing from the position
it was last sent (:attr:`Client.position`). A stream's first event, its
snapshot, is not queued whole: it is a reader of pieces
(:class:`~pulsestream_streamer.fanout.snapshots.SnapshotReader`) that the
writer pulls one piece per write, so a client that stops reading holds one
piece of it.

:meth:`Registry.sweep` runs every ``sweep_interval`` in one task for all
clients: a heartbeat comment to each client idle for ``heartbeatInterval``,
abort for writers stuck longer than ``client_stall_timeout``, a graceful end
for streams older than their (jittered) ``client_max_lifetime``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from pulsestream_streamer.core.pieces import SnapshotLost
from pulsestream_streamer.core.sse import error_frame

__all__ = ["Client", "ClientLimits", "DirectWrite", "Registry"]

logger = logging.getLogger(__name__)

_PREFIX = os.urandom(3).hex()
_COUNTER = itertools.count(1)

#: The last event a slow consumer gets before its stream ends.
SLOW_CONSUMER = error_frame("slow_consumer", "client fell too far behind; reconnect with Last-Event-ID to resume")


@dataclass(slots=True)
class ClientLimits:
    """Limits shared by all clients; the live settings watcher updates them in place."""

    max_events: int = 1024
    max_bytes: int = 4 * 1024 * 1024
    heartbeat: float = 15.0
    stall_timeout: float = 30.0
    max_lifetime: float = 3600.0
    write_buffer: int = 16 * 1024


#: Writes a pre-framed chunk straight to the connection when it can take it now (idle transport, not
#: paused by flow control, peer still there) and says whether it did; False leaves the chunk to the queue.
DirectWrite = Callable[[bytes], bool]


class Client:
    """One SSE connection: its queue and its state."""

    __slots__ = (
        "_abort",
        "_behind",
        "_closing",
        "_direct",
        "_gone",
        "_pieces",
        "_pieces_position",
        "_queue",
        "_queued_bytes",
        "_queued_position",
        "_waiter",
        "blocked_since",
        "bytes_sent",
        "connected_at",
        "deadline",
        "events_dropped",
        "id",
        "key",
        "last_write",
        "limits",
        "on_behind",
        "peer",
        "piece_bytes",
        "position",
        "probe",
        "reason",
    )

    def __init__(self, peer: str, key: str, limits: ClientLimits, now: float) -> None:
        self.id = f"{_PREFIX}-{next(_COUNTER):x}"
        self.peer = peer
        self.key = key
        self.limits = limits
        self.connected_at = now
        self.last_write = now
        self.blocked_since = 0.0
        self.bytes_sent = 0
        self.events_dropped = 0
        lifetime = limits.max_lifetime
        self.deadline = now + lifetime * random.uniform(0.9, 1.1) if lifetime > 0 else 0.0
        #: Returns True once the peer has gone (set by the HTTP layer when the server can tell).
        self.probe: Callable[[], bool] | None = None
        self.reason = ""
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._closing = False
        self._gone = False
        self._abort: Callable[[], None] | None = None
        self._direct: DirectWrite | None = None
        #: The snapshot still being written, a piece per write, and the stream's position after it.
        self._pieces: Iterator[bytes] | None = None
        self._pieces_position: Mapping[str, int] | None = None
        #: Positions (series -> sequence) of the newest event handed to the writer, and of the newest queued.
        self.position: Mapping[str, int] | None = None
        self._queued_position: Mapping[str, int] | None = None
        #: Called once when the queue passes half a bound (the hub may degrade the client); None = never.
        self.on_behind: Callable[[Client], None] | None = None
        self._behind = False
        #: Snapshot bytes produced since the writer last counted them (for the bytes-sent metric).
        self.piece_bytes = 0

    # --- producer side (hub, sweep) ---------------------------------------------------------------

    def push(self, data: bytes, position: Mapping[str, int] | None = None) -> None:
        """Queue a shared frame. Never blocks; a client over its limits is dropped as a slow consumer.

        ``position`` is where the stream stands once ``data`` (an event with an id) is sent.
        """
        if self._closing:
            return
        queue = self._queue
        limits = self.limits
        if len(queue) >= limits.max_events or self._queued_bytes > limits.max_bytes:
            self._slow()
            return
        queue.append(data)
        self._queued_bytes += len(data)
        if position is not None:
            self._queued_position = position
        if (
            not self._behind
            and self.on_behind is not None
            and self._pieces is None
            and (2 * len(queue) >= limits.max_events or 2 * self._queued_bytes > limits.max_bytes)
        ):
            self._behind = True
            self.on_behind(self)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def deliver(self, event: bytes, chunk: bytes, now: float, position: Mapping[str, int] | None = None) -> None:
        """Send a shared event: straight to the connection when it is idle, else queue it.

        ``chunk`` is ``event`` in HTTP/1.1 chunked framing (built once per flush for all
        clients). When nothing is queued, the writer is not mid-write and the connection's
        :class:`DirectWrite` takes the chunk, it is written at once: no task wake-up, no copy.
        Anything else takes the queue and the writer, which keeps order, backpressure and
        slow-consumer handling exactly as before.
        """
        direct = self._direct
        if (
            direct is not None
            and not self._queue
            and self._pieces is None
            and not self.blocked_since
            and not self._closing
            and direct(chunk)
        ):
            self.bytes_sent += len(event)
            self.last_write = now
            if position is not None:
                self.position = position
            return
        self.push(event, position)

    def rewind(self) -> int:
        """Drop what is queued but keep the stream (a degraded client continues from :attr:`position`).

        Returns how many events were dropped. The client may be behind again afterwards.
        """
        dropped = len(self._queue)
        self.events_dropped += dropped
        self._queue = []
        self._queued_bytes = 0
        self._queued_position = None
        return dropped

    def caught_up(self) -> None:
        """The hub dealt with this client being behind (degraded it, or left it): watch again."""
        self._behind = False

    def attach(self, direct: DirectWrite | None) -> None:
        """Let :meth:`deliver` write to this connection directly (the HTTP layer provides ``direct``)."""
        self._direct = direct

    def prime(self, first: Iterator[bytes], position: Mapping[str, int] | None = None) -> None:
        """Send ``first`` (retry + snapshot, in pieces) before anything queued, outside the queue bounds."""
        self._pieces = first
        self._pieces_position = position
        self._wake()

    def finish(self, last: bytes, reason: str) -> None:
        """Send ``last`` after what is queued, then end the stream (server shutdown, lifetime, slow)."""
        if self._closing:
            return
        self._queue.append(last)
        self._queued_bytes += len(last)
        self._closing = True
        self.reason = reason
        self._wake()

    def drop(self, last: bytes, reason: str) -> None:
        """Discard what is queued, send ``last`` and end; abort the connection if its writer is stuck."""
        if self._closing:
            return
        self.events_dropped += len(self._queue)
        self._queue = [last]
        self._queued_bytes = len(last)
        self._closing = True
        self.reason = reason
        self._wake()
        if self.blocked_since:
            self.abort()

    def _slow(self) -> None:
        self.drop(SLOW_CONSUMER, "slow_consumer")

    def set_abort(self, abort: Callable[[], None] | None) -> None:
        """How to cut the connection when its writer cannot make progress (set by the HTTP layer)."""
        self._abort = abort

    def abort(self) -> None:
        """Cut the connection now (a stalled peer): the blocked write returns and the writer ends."""
        self._closing = True
        if self._abort is not None:
            abort, self._abort = self._abort, None
            abort()
        self._wake()

    # --- consumer side (the connection's writer) --------------------------------------------------

    def disconnected(self) -> None:
        """The peer went away (seen by the HTTP layer)."""
        self._gone = True
        self._closing = True
        if not self.reason:
            self.reason = "disconnect"
        self._queue = []
        self._queued_bytes = 0
        self._pieces = None
        self._wake()

    @property
    def writes_directly(self) -> bool:
        """Whether flushes may write to this connection without the queue (see :meth:`deliver`)."""
        return self._direct is not None

    @property
    def gone(self) -> bool:
        return self._gone

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    @property
    def writing_snapshot(self) -> bool:
        return self._pieces is not None

    def _next_piece(self) -> bytes | None:
        """The next piece of the snapshot being written; None when it is done (or the connection is cut)."""
        assert self._pieces is not None
        try:
            piece = next(self._pieces)
            self.piece_bytes += len(piece)
            return piece
        except StopIteration:
            self._pieces = None
            if self._pieces_position is not None:
                self.position = self._pieces_position
            return None
        except SnapshotLost as error:
            # Half an event is out: the stream cannot continue, the browser reconnects and starts over.
            logger.debug("snapshot lost mid-write: %s", error, extra={"client_id": self.id})
            self._pieces = None
            self.reason = "snapshot_lost"
            self.abort()
            return None

    async def next_body(self) -> bytes | None:
        """The next write: a piece of the snapshot, else everything queued joined; ``None`` when over."""
        while True:
            if self._pieces is not None and not self._gone:
                piece = self._next_piece()
                if piece is not None:
                    return piece
                continue
            if self._queue:
                break
            if self._closing or self._gone:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            await waiter
        if self._gone:
            return None
        queue = self._queue
        self._queue = []
        self._queued_bytes = 0
        if self._queued_position is not None:
            self.position, self._queued_position = self._queued_position, None
        return queue[0] if len(queue) == 1 else b"".join(queue)

    def wrote(self, size: int, now: float) -> None:
        self.bytes_sent += size
        self.last_write = now


class Registry:
    """All connected clients, by id; counts per client key for per-client stream limits."""

    def __init__(self, limits: ClientLimits) -> None:
        self.limits = limits
        self._clients: dict[str, Client] = {}
        self._per_key: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._clients.values()))

    def open(self, peer: str, key: str | None = None) -> Client:
        """Register a new client (``key`` identifies the client for limits; default its address)."""
        client = Client(peer, key or peer.rpartition(":")[0] or peer, self.limits, asyncio.get_running_loop().time())
        self._clients[client.id] = client
        self._per_key[client.key] += 1
        logger.debug("client connected", extra={"client_id": client.id, "peer": peer, "clients": len(self._clients)})
        return client

    def close(self, client: Client) -> None:
        """Forget a client (its writer has ended)."""
        if self._clients.pop(client.id, None) is None:
            return
        self._per_key[client.key] -= 1
        if self._per_key[client.key] <= 0:
            del self._per_key[client.key]
        logger.debug(
            "client disconnected",
            extra={
                "client_id": client.id,
                "reason": client.reason or "closed",
                "bytes_sent": client.bytes_sent,
                "clients": len(self._clients),
            },
        )

    def streams_of(self, key: str) -> int:
        """Open streams of one client key (API key or address)."""
        return self._per_key.get(key, 0)

    def sweep(self, now: float, heartbeat_frame: bytes, lifetime_frame: bytes, *, draining: bool = False) -> None:
        """Heartbeats for idle clients, abort for stalled writers, graceful end past max lifetime.

        While draining, a writer stuck for a second is aborted: it cannot take the shutdown
        event anyway, and the server should not wait out its graceful period for it.
        """
        limits = self.limits
        idle_before = now - limits.heartbeat
        stall = min(limits.stall_timeout, 1.0) if draining else limits.stall_timeout
        for client in list(self._clients.values()):
            if client.probe is not None and not client.gone and client.probe():
                client.disconnected()
                continue
            if client.closing:
                if client.blocked_since and now - client.blocked_since > stall:
                    client.abort()
                continue
            if client.blocked_since and now - client.blocked_since > stall:
                client.reason = "stalled"
                client.abort()
            elif client.deadline and now >= client.deadline:
                client.finish(lifetime_frame, "max_lifetime")
            elif client.last_write <= idle_before and not client.queued:
                client.push(heartbeat_frame)

    def shutdown(self, last: bytes) -> None:
        """Tell every client to reconnect elsewhere and end its stream (SIGTERM drain)."""
        for client in list(self._clients.values()):
            client.finish(last, "server_shutdown")
