"""Entry point: ``pulsestream-generator`` / ``python -m pulsestream_generator``.

Reads the settings from the environment (a bad value prints one message and
exits 2), configures logging, and serves until SIGTERM or SIGINT, which
start the graceful drain. Runs on uvloop when it is installed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from pulsestream import logs, telemetry
from pulsestream_generator.server import GeneratorApp, StartupError
from pulsestream_generator.settings import GeneratorSettings

logger = logging.getLogger(__name__)


async def serve(settings: GeneratorSettings) -> None:
    """Run the app until a termination signal, then drain and stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        logger.info("received %s, shutting down", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await GeneratorApp(settings).run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main() -> None:
    settings = GeneratorSettings.from_env_or_exit("pulsestream-generator")
    logs.configure(settings.log_level, settings.log_format, "pulsestream-generator")
    provider = telemetry.configure_or_exit("pulsestream-generator")
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(settings))
    except StartupError as error:
        print(f"pulsestream-generator: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    finally:
        if provider is not None:
            provider.shutdown()  # flush batched spans before the process ends


if __name__ == "__main__":
    main()
