"""pulsestream streamer: one shared gRPC subscription per (series, resolution), fanned out to browsers over SSE.

Data flow (see the README's "Streamer" section for the wire format)::

    upstream.py  gRPC Subscribe per topic, reconnect + failover + resume
        -> topic.py       one (series, resolution): sequencing.py (duplicates, reordering,
                          gaps) and ring.py (bounded history for snapshots and resume)
        -> feed.py        identical streams: each batch encoded once per shape,
                          one event (and one chunk) per flush for all of them
        -> hub.py         topics and feeds, the flush loop, joining and resume (cursor.py)
        -> registry.py    clients: bounded queues, slow consumers, heartbeats, lifetime
        -> sse.py         framing and the per-connection writer
    app.py / __main__.py  the HTTP routes and the uvicorn server around them
"""

from importlib import metadata

try:
    __version__ = metadata.version("pulsestream")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
