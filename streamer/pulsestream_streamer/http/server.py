"""The uvicorn server the streamer runs in, configured for many long-lived connections.

A large listen backlog, a concurrency limit above the connections one pod is
sized for, proxy headers only when configured, a bounded request head
(:func:`~pulsestream_streamer.http.uvicorn_internals.bounded_protocol`) and a
bounded graceful shutdown. On SIGTERM/SIGINT the hub first tells every SSE
client to reconnect (a ``server_shutdown`` event with a short ``retry:``) and
ends their streams, so browsers move to another replica while uvicorn closes
the listener and waits for the connections to finish.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from types import FrameType

import uvicorn

from pulsestream_streamer.http.app import StreamerApp, create_app
from pulsestream_streamer.http.uvicorn_internals import bounded_protocol
from pulsestream_streamer.settings import StreamerSettings

__all__ = ["StreamerServer", "build_server", "connection_budget"]

logger = logging.getLogger(__name__)

#: File descriptors kept for everything but client connections: the listener, upstream channels,
#: logs, the settings and key files, epoll and the event loop's own pipes.
FD_RESERVE = 128


class StreamerServer(uvicorn.Server):
    """uvicorn's server, plus: a shutdown signal drains the SSE clients before connections are waited on."""

    def __init__(self, config: uvicorn.Config, app: StreamerApp) -> None:
        super().__init__(config)
        self.streamer_app = app

    def bind(self) -> socket.socket:
        """The listening socket, with SO_SNDBUF set when configured (accepted connections inherit it)."""
        sock = self.config.bind_socket()
        size = self.streamer_app.state.settings.socket_send_buffer
        if size:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        return sock

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            loop.call_soon_threadsafe(self.streamer_app.state.hub.drain)
        super().handle_exit(sig, frame)


def connection_budget(wanted: int) -> int:
    """How many concurrent connections this process can hold: ``wanted``, or what its fd limit leaves room for.

    The soft ``RLIMIT_NOFILE`` is first raised to the hard one (as nginx's ``worker_rlimit_nofile``
    does). Past the limit, ``accept()`` fails with EMFILE and the server can answer nobody, probes
    included; with the concurrency limit below it, the extra connections get a clean 503 instead.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted + FD_RESERVE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    room = max(10, soft - FD_RESERVE)
    if wanted > room:
        logger.warning(
            "STREAMER_LIMIT_CONCURRENCY=%d is above what the file-descriptor limit (%d) leaves room for: using %d",
            wanted,
            soft,
            room,
        )
        return room
    return wanted


def build_server(settings: StreamerSettings, app: StreamerApp | None = None) -> StreamerServer:
    """The configured server for ``settings`` (tests run the same one on port 0)."""
    app = app or create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=bounded_protocol(settings.max_request_head, settings.request_head_timeout.seconds),
        ws="none",
        lifespan="on",
        log_config=None,
        access_log=settings.log_level == "debug",
        # One setting for both layers: uvicorn believes forwarded headers only from these peers (for
        # scheme and logs), and the access gate names rate-limit clients by the same rule.
        proxy_headers=bool(settings.trusted_proxies.strip()),
        forwarded_allow_ips=settings.trusted_proxies.strip() or None,
        backlog=settings.backlog,
        limit_concurrency=connection_budget(settings.limit_concurrency),
        timeout_keep_alive=5,
        timeout_graceful_shutdown=max(1, round(settings.graceful_shutdown.seconds)),
        server_header=False,
    )
    return StreamerServer(config, app)
