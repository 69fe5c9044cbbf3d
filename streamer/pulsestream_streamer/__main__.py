"""``pulsestream-streamer``: settings from the environment, logging and tracing, then the uvicorn server."""

from __future__ import annotations

from pulsestream import logs, telemetry
from pulsestream_streamer.access import redaction
from pulsestream_streamer.http.server import build_server
from pulsestream_streamer.observability import tracing
from pulsestream_streamer.settings import StreamerSettings

__all__ = ["main"]


def main() -> None:
    """Console script entry point."""
    settings = StreamerSettings.from_env_or_exit("pulsestream-streamer")
    logs.configure(settings.log_level, settings.log_format, "streamer")
    provider = telemetry.configure_or_exit("pulsestream-streamer")
    server = build_server(settings)
    redaction.install(server.streamer_app.state.access.secrets)  # keys and token secrets never reach a log line
    with tracing.exporting_until_exit(provider, server.handle_exit):  # batched spans flushed before exit
        server.run(sockets=[server.bind()])  # our bind: it applies STREAMER_SOCKET_SEND_BUFFER (uvicorn's does not)


if __name__ == "__main__":
    main()
