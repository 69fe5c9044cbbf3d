"""The README's commands work when pasted against ``make run`` (issue 18, item 13).

The grpcurl ``start_time`` and ``after_sequence`` examples once named times older than the retention
window, so they failed as shown. Every console block of the README marked ``<!-- readme-check: ... -->``
runs here, against a real generator and streamer, with only their ports changed:

- ``run``: each command must end well (0, or 68 for a stream cut by its own ``-max-time``);
- ``background series=NAME``: the block (a producer that runs until Ctrl-C) is started, and the series it
  publishes must reach an SSE client through the streamer; then it is stopped.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from loopback import wait_for
from services import Generator, Stack, StreamerProcess
from sse import read_stream

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BLOCK = re.compile(
    r"<!-- readme-check: (?P<kind>run|background)(?: series=(?P<series>\S+))? -->\n```console\n(?P<body>.*?)```", re.S
)
#: grpcurl's exit status for a stream its own -max-time ended (64 + DEADLINE_EXCEEDED).
DEADLINE = 68

pytestmark = pytest.mark.e2e


def _blocks(kind: str) -> list[tuple[str | None, str]]:
    found = [(m["series"], m["body"]) for m in BLOCK.finditer((ROOT / "README.md").read_text()) if m["kind"] == kind]
    assert found, f"no README block marked readme-check: {kind}"
    return found


def _commands(body: str) -> list[str]:
    """Shell commands of a block, backslash continuations joined."""
    return [command for command in re.sub(r"\\\n\s*", "", body).splitlines() if command.strip()]


def _localized(text: str, generator: Generator, streamer: StreamerProcess) -> str:
    for address in ("127.0.0.1:50051", "localhost:50051"):
        text = text.replace(address, generator.address)
    return text.replace("127.0.0.1:8080", f"127.0.0.1:{streamer.port}").replace(".venv/bin/", f"{BIN}/")


def _environment(generator: Generator) -> dict[str, str]:
    """A plain shell's environment; the CLI's default target (127.0.0.1:50051 under make run) moved like the ports."""
    return {
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PULSESTREAM_TARGET": generator.address,
    }


@pytest.fixture(scope="module")
def services(module_stack: Stack) -> tuple[Generator, StreamerProcess]:
    # What make run starts: the default frequency and retention, ingest open.
    generator = module_stack.generator(GENERATOR_FREQUENCY="100ms", GENERATOR_RETENTION="10m")
    return generator, module_stack.streamer(generator)


def test_every_marked_command_ends_well_as_written(services: tuple[Generator, StreamerProcess]) -> None:
    generator, streamer = services
    for _, body in _blocks("run"):
        commands = [_localized(command, generator, streamer) for command in _commands(body)]
        script = "".join(f'{command}\necho "__status__ $?"\n' for command in commands)
        done = subprocess.run(
            ["bash", "-c", script],
            check=False,
            cwd=ROOT,
            env=_environment(generator),
            capture_output=True,
            text=True,
            timeout=120,
        )
        statuses = [int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("__status__ ")]
        assert len(statuses) == len(commands), done.stdout + done.stderr
        for command, status in zip(commands, statuses, strict=True):
            allowed = {0, DEADLINE} if "-max-time" in command else {0}
            assert status in allowed, f"{command!r} exited {status}:\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("index", range(len(_blocks("background"))))
def test_every_producer_example_reaches_a_browser_stream(
    services: tuple[Generator, StreamerProcess], index: int, tmp_path: Path
) -> None:
    generator, streamer = services
    series, body = _blocks("background")[index]
    assert series is not None
    out = (tmp_path / "example.log").open("wb")
    example = subprocess.Popen(
        ["bash", "-c", _localized(body, generator, streamer)],
        cwd=ROOT,
        env=_environment(generator),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def listed() -> bool:
            assert example.poll() is None, (tmp_path / "example.log").read_text()
            names = [entry["name"] for entry in httpx.get(streamer.url + "/v1/series", timeout=5).json()]
            return series in names

        wait_for(listed, 60, f"{series} in /v1/series")
        events = read_stream(f"{streamer.url}/v1/stream?series={series}&window=10s", count=2, timeout=30)
        points = [point for event in events for point in event.data["points"]]
        assert any(point["series"] == series for point in points), events
    finally:
        os.killpg(example.pid, signal.SIGTERM)
        example.wait(10)
        out.close()
