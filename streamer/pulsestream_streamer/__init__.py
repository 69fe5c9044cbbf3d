"""pulsestream streamer: one shared gRPC subscription per (series, resolution), fanned out to browsers over SSE.

Data flow (see the README's "Streamer" section for the wire format)::

    upstream.py  gRPC Subscribe per topic, reconnect + failover + resume
        -> sequencing.py  duplicates dropped, reordering, gap detection
        -> ring.py        bounded history per topic: snapshots and resume
        -> hub.py         topics and feeds; each batch encoded once per shape
        -> registry.py    clients and their bounded queues
        -> sse.py         one lean writer per connection, one write per flush
"""

from importlib import metadata

try:
    __version__ = metadata.version("pulsestream")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
