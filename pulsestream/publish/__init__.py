"""Publish your own data to a pulsestream generator: a producer library and the ``pulsestream-publish`` CLI.

>>> from pulsestream.publish import Publisher
>>> with Publisher("127.0.0.1:50051") as publisher:      # sync; AsyncPublisher for asyncio code
...     publisher.record("orders", 12.5)                # stamped now, batched, sent in the background

What it promises (details in :mod:`.publisher` and :mod:`.buffer`):

- batches by size (``batch_size``) and time (``linger``), one batch in flight, each acknowledged;
- a point is stamped when recorded, so resending it is idempotent: the generator stores a
  (series, timestamp) once, and a retry after an error or a lost answer never duplicates;
- transient failures (generator restarting, busy, unreachable) are retried with the delay the
  generator asks for, else exponential backoff with full jitter, while the channel reconnects;
- the buffer is bounded (``max_buffer``); when full, ``record`` drops the oldest point by default
  (``overflow="drop-newest"`` or ``"error"`` otherwise) and ``put`` waits for room instead;
- ``close`` (or leaving ``with``) flushes what is held and says if anything was left.
"""

from pulsestream.publish.buffer import BufferFull, Overflow
from pulsestream.publish.publisher import DEFAULT_TARGET, AsyncPublisher, PublishError, Stats
from pulsestream.publish.threaded import Publisher

__all__ = ["DEFAULT_TARGET", "AsyncPublisher", "BufferFull", "Overflow", "PublishError", "Publisher", "Stats"]
