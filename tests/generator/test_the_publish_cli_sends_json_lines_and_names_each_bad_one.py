"""``pulsestream-publish``, the real console script, against a real generator: JSON lines in, series out."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import pytest
from generator_streams import StartGenerator, points_by_series
from loopback import wait_until
from pulsestream_generator.server import GeneratorApp
from services import clean_environment, console_script

from pulsestream.publish.cli import BadLine, parse_line
from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc

CLI = console_script("pulsestream-publish")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def publish(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the CLI (on its own process, so this loop keeps serving the generator); exit status and stderr."""
    proc = await asyncio.create_subprocess_exec(
        CLI,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**clean_environment(), **(env or {})},
    )
    _, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def points(app: GeneratorApp, name: str) -> list[timeseries_pb2.Point]:
    async with grpc.aio.insecure_channel(app.address) as channel:
        call = timeseries_pb2_grpc.TimeSeriesServiceStub(channel).Subscribe(
            timeseries_pb2.SubscribeRequest(series=[name], after_sequence=now_ms() - 25_000)
        )
        messages = []
        try:
            while True:
                messages.append(await asyncio.wait_for(call.read(), 0.3))
        except TimeoutError:
            pass
        except grpc.aio.AioRpcError as error:  # not created yet
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        call.cancel()
    return points_by_series(messages).get(name, [])


async def test_json_lines_are_published_and_a_bad_line_is_named_and_makes_the_exit_status_non_zero(
    generator: GeneratorApp,
) -> None:
    t = now_ms() - 5000
    lines = "\n".join(
        [
            f'{{"series": "orders", "v": 12.5, "t": {t}}}',
            '{"series": "orders", "v": 13}',
            "",
            "not json",
            '{"series": "orders", "v": "x"}',
            '{"v": 1}',
            '{"series": "orders", "v": NaN}',
            f'{{"series": "orders", "v": 14, "t": {t + 1}}}',
        ]
    )
    code, err = await publish("--target", generator.address, stdin=lines)
    assert code == 1, err
    for number in (4, 5, 6, 7):
        assert f"line {number}:" in err
    assert 'line 5: "v" must be a number' in err and 'line 6: no "series"' in err
    assert "3 points acknowledged" in err and "4 bad lines" in err
    stored = await points(generator, "orders")
    assert [(p.sequence, p.value) for p in stored][:2] == [(t, 12.5), (t + 1, 14.0)]
    assert len(stored) == 3


async def test_all_good_lines_exit_zero_and_series_can_default(generator: GeneratorApp) -> None:
    code, err = await publish(
        "--target", generator.address, "--series", "checkout.latency", "-q", stdin='{"v": 1}\n{"v": 2}\n'
    )
    assert (code, err) == (0, "")
    assert [p.value for p in await points(generator, "checkout.latency")] == [1.0, 2.0]


async def test_the_token_comes_from_the_environment_and_a_wrong_one_exits_3(start_generator: StartGenerator) -> None:
    app = await start_generator(ingest_tokens=["cli-token"])
    code, err = await publish(
        "--target", app.address, stdin='{"series": "a", "v": 1}\n', env={"PULSESTREAM_INGEST_TOKEN": "cli-token"}
    )
    assert code == 0, err
    code, err = await publish("--target", app.address, "--token", "nope", stdin='{"series": "a", "v": 1}\n')
    assert code == 3 and "UNAUTHENTICATED" in err


async def test_rate_paces_the_points(generator: GeneratorApp) -> None:
    started = time.monotonic()
    code, err = await publish("--target", generator.address, "--rate", "20", stdin='{"series": "paced", "v": 1}\n' * 10)
    assert code == 0, err
    assert time.monotonic() - started >= 0.45
    stored = await points(generator, "paced")
    assert len(stored) == 10 and stored[-1].sequence - stored[0].sequence >= 400


async def test_follow_publishes_lines_appended_to_a_file_until_interrupted(
    generator: GeneratorApp, tmp_path: Path
) -> None:
    log = tmp_path / "points.jsonl"
    log.write_text('{"series": "tail", "v": 1}\n')
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "--target",
        generator.address,
        "--follow",
        str(log),
        "--linger",
        "0.02",
        stderr=asyncio.subprocess.PIPE,
        env=clean_environment(),
    )
    await wait_until(lambda: points(generator, "tail"), timeout=20, what="the first line")
    with log.open("a") as out:
        out.write('{"series": "tail", "v": 2}\n')
    await wait_until(lambda: _count(generator, "tail", 2), timeout=20, what="the appended line")
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0


async def _count(app: GeneratorApp, name: str, count: int) -> bool:
    return len(await points(app, name)) >= count


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"series": 5, "v": 1}', '"series" must be a string'),
        ('{"series": "a b", "v": 1}', "breaks the rules"),
        ('{"series": "a", "v": true}', '"v" must be a number'),
        ('{"series": "a", "v": 1, "t": "now"}', '"t" must be a number'),
        ('{"series": "a", "v": 1e999}', "not JSON"),  # orjson: infinity is no JSON number
    ],
)
def test_a_bad_line_says_what_is_wrong(line: str, message: str) -> None:
    with pytest.raises(BadLine, match=message):
        parse_line(line, None)
    assert parse_line('{"series": "a", "v": 2, "t": 1732650000000.7}', None) == ("a", 2.0, 1732650000000)
