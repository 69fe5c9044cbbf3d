"""The README's commands work when pasted against ``make run`` (issue 18, item 13).

The grpcurl ``start_time`` and ``after_sequence`` examples once named times older than the retention
window, so they failed as shown. Every console block of the README marked ``<!-- readme-check: ... -->``
runs here, against a real generator and streamer, with only their ports changed:

- ``run``: each command must end well (0, or 68 for a stream cut by its own ``-max-time``), or, a
  stream a user stops with Ctrl-C (``curl -N .../v1/stream``), still run after a few seconds having
  printed events; ``run keys`` runs against a streamer with an API key, pasted where the block says ``KEY``;
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
    r"<!-- readme-check: (?P<kind>run|background)(?: (?P<option>keys|series=\S+))? -->\n```console\n(?P<body>.*?)```",
    re.S,
)
KEY = "readme-key-0123456789"
#: How long a command that streams until Ctrl-C is watched.
STREAM_SECONDS = 3.0
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S")
#: grpcurl's exit status for a stream its own -max-time ended (64 + DEADLINE_EXCEEDED).
DEADLINE = 68

pytestmark = pytest.mark.e2e


def _blocks(kind: str) -> list[tuple[str | None, str]]:
    text = (ROOT / "README.md").read_text()
    found = [(m["option"], m["body"]) for m in BLOCK.finditer(text) if m["kind"] == kind]
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


def _run(command: str, assignments: list[str], generator: Generator) -> tuple[int | None, str]:
    """Run one command after the block's earlier variable assignments: its status (None: still streaming), output."""
    script = "\n".join([*assignments, command])
    with subprocess.Popen(
        ["bash", "-c", script],
        cwd=ROOT,
        env=_environment(generator),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=60 if "-max-time" in command else STREAM_SECONDS + 60)
            return proc.returncode, out.decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, out.decode(errors="replace")


def _check_block(body: str, generator: Generator, streamer: StreamerProcess, key: str | None) -> None:
    assignments: list[str] = []
    for raw in _commands(body):
        command = _localized(raw, generator, streamer)
        if key is not None:
            command = re.sub(r"\bKEY\b", key, command)
        if ASSIGNMENT.match(command) and " " not in command.split("=", 1)[0]:
            assignments.append(command)
            continue
        streams = "curl" in command and "/v1/stream" in command and "-m " not in command
        status, out = _run(command, assignments, generator) if not streams else _stream(command, generator)
        if streams:
            assert status is None and "event: snapshot" in out, f"{command!r} did not stream:\n{out[-2000:]}"
            continue
        allowed = {0, DEADLINE} if "-max-time" in command else {0}
        assert status in allowed, f"{command!r} exited {status}:\n{out[-2000:]}"


def _stream(command: str, generator: Generator) -> tuple[int | None, str]:
    """A command that streams until Ctrl-C: watched for a few seconds, then stopped."""
    with subprocess.Popen(
        ["bash", "-c", command],
        cwd=ROOT,
        env=_environment(generator),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=STREAM_SECONDS)
            return proc.returncode, out.decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            out, _ = proc.communicate()
            return None, out.decode(errors="replace")


def test_every_marked_command_ends_well_as_written(services: tuple[Generator, StreamerProcess]) -> None:
    generator, streamer = services
    for option, body in _blocks("run"):
        if option != "keys":
            _check_block(body, generator, streamer, None)


def test_every_marked_command_with_a_key_works_against_a_protected_streamer(
    services: tuple[Generator, StreamerProcess], module_stack: Stack
) -> None:
    generator, _ = services
    protected = module_stack.streamer(generator, STREAMER_API_KEYS=KEY)
    bodies = [body for option, body in _blocks("run") if option == "keys"]
    assert bodies, "no README block marked readme-check: run keys"
    for body in bodies:
        _check_block(body, generator, protected, KEY)


@pytest.mark.parametrize("index", range(len(_blocks("background"))))
def test_every_producer_example_reaches_a_browser_stream(
    services: tuple[Generator, StreamerProcess], index: int, tmp_path: Path
) -> None:
    generator, streamer = services
    option, body = _blocks("background")[index]
    assert option is not None and option.startswith("series=")
    series = option.removeprefix("series=")
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
