"""pulsestream streamer: one shared gRPC subscription per (series, resolution), fanned out to browsers over SSE.

The sub-packages are the layers, top to bottom (``lint-imports`` enforces that
each imports only those below it)::

    http/           the FastAPI app, the SSE route and its writer, params, the uvicorn server
    fanout/         hub -> topics (one upstream stream each) -> feeds (encode once) -> client queues
    upstream/       gRPC channels, Subscribe/ListSeries, reconnect + failover + resume, the catalogue
    settings.py     the process settings (STREAMER_*)
    access/         API keys, client identity, rate limits, log redaction  | independent of
    observability/  Prometheus metrics and OpenTelemetry spans              | each other
    core/           pure logic: samples, sequencing, ring, cursors, shapes, SSE framing, backoff

Data flows upstream -> fanout -> http: ``upstream.follow`` keeps a topic
subscribed; the topic orders points (``core.sequencing``), keeps them
(``core.ring``) and hands each batch, encoded once per format
(``core.shape``), to its feeds; a flush turns a feed's batches into ONE
``points`` event that every client's queue references; the HTTP writer
sends each client's queue as one write.
"""

from importlib import metadata

try:
    __version__ = metadata.version("pulsestream")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"
