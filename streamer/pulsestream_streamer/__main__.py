"""``pulsestream-streamer``: settings from the environment, then uvicorn with uvloop and httptools.

uvicorn is configured for many long-lived connections: a large listen
backlog, a concurrency limit above the connections one pod is sized for, no
keep-alive timeout games for streams (SSE responses never end on their own),
proxy headers only when configured, a bounded request head
(:mod:`~pulsestream_streamer.requesthead`) and a bounded graceful shutdown.

On SIGTERM/SIGINT the hub first tells every SSE client to reconnect (an
``error`` event ``server_shutdown`` with a short ``retry:``) and ends their
streams, so browsers move to another replica while uvicorn closes the
listener and waits for the connections to finish.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn

from pulsestream import logs, telemetry
from pulsestream_streamer import redaction, requesthead, tracing
from pulsestream_streamer.app import StreamerApp, create_app
from pulsestream_streamer.settings import StreamerSettings

__all__ = ["StreamerServer", "build_server", "main"]

logger = logging.getLogger(__name__)


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


def build_server(settings: StreamerSettings, app: StreamerApp | None = None) -> StreamerServer:
    """The configured server for ``settings`` (tests run the same one on port 0)."""
    app = app or create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=requesthead.bounded_protocol(settings.max_request_head),
        ws="none",
        lifespan="on",
        log_config=None,
        access_log=settings.log_level == "debug",
        # One setting for both layers: uvicorn believes forwarded headers only from these peers (for
        # scheme and logs), and the access gate names rate-limit clients by the same rule.
        proxy_headers=bool(settings.trusted_proxies.strip()),
        forwarded_allow_ips=settings.trusted_proxies.strip() or None,
        backlog=settings.backlog,
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=max(1, round(settings.graceful_shutdown.seconds)),
        server_header=False,
    )
    return StreamerServer(config, app)


def main() -> None:
    """Console script entry point."""
    settings = StreamerSettings.from_env_or_exit("pulsestream-streamer")
    logs.configure(settings.log_level, settings.log_format, "streamer")
    provider = telemetry.configure_or_exit("pulsestream-streamer")
    server = build_server(settings)
    redaction.install(server.streamer_app.state.access.keys.secrets)  # keys never reach a log line
    with tracing.exporting_until_exit(provider, server.handle_exit):  # batched spans flushed before exit
        server.run(sockets=[server.bind()])  # our bind: it applies STREAMER_SOCKET_SEND_BUFFER (uvicorn's does not)


if __name__ == "__main__":
    main()
