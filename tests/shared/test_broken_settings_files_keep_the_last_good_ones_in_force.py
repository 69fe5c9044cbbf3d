"""The live settings file broken in every way an operator or a volume can break it, with streams flowing.

Corrupted in place (a bind-mount edit), deleted, replaced by a valid file with out-of-range values, then
replaced atomically by a good file: both services keep the last good settings while the file is bad and say
so (the streamer in /health ``settings_error`` and its log, the generator in its log while ListSeries still
reports the good values), keep streaming without a gap, and apply the good file when it comes.
"""

from __future__ import annotations

import re

import grpc
import pytest
import yaml
from google.protobuf import duration_pb2
from loopback import wait_until
from services import OPEN_LIMITS, Generator, Service, Stack
from sse import EventSource, assert_continuous, following

from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


async def _retention_s(generator: Generator) -> float:
    async with grpc.aio.insecure_channel(generator.address) as channel:
        reply = await timeseries_pb2_grpc.TimeSeriesServiceStub(channel).ListSeries(
            timeseries_pb2.ListSeriesRequest(), timeout=5
        )
    retention: duration_pb2.Duration = reply.retention
    return retention.seconds + retention.nanos / 1e9


def _count(process: Service, pattern: str) -> int:
    return len(re.findall(pattern, process.log_text()))


async def test_bad_settings_files_are_refused_and_reported_while_the_last_good_ones_stay_in_force(
    stack: Stack,
) -> None:
    generator = await stack.aio.generator({"retention": "50s"})
    streamer = await stack.aio.streamer([generator], {"flushInterval": "40ms"})
    client = EventSource([streamer.url], "/v1/stream?series=cpu,memory&window=1s")
    good = {**OPEN_LIMITS, "flushInterval": "40ms"}
    good_version = streamer.version_of(good)
    assert (await streamer.aio.health())["config_version"] == good_version
    assert await _retention_s(generator) == 50

    breakages = [
        ("corrupted in place", lambda p: p.settings_path.write_bytes(b"frequency: [100ms\n\x00\xff garbage")),
        ("deleted", lambda p: p.settings_path.unlink()),
        ("out of range, replaced atomically", lambda p: p.write_settings("frequency: 5ms\nbufferSize: -3\n")),
    ]
    async with following(client):
        for number, (what, breakage) in enumerate(breakages, start=1):
            for process in (generator, streamer):
                breakage(process)

            # Each refusal is logged once, by both services; /health then carries the reason.
            for process in (generator, streamer):
                await wait_until(
                    lambda p=process, n=number: _count(p, r"settings rejected, keeping version") >= n,  # type: ignore[misc]
                    what=f"the {process.name} to log the file {what}",
                )
            assert _count(streamer, r"settings rejected, keeping version " + good_version) == number
            health = await streamer.aio.health()
            assert health["settings_error"], what
            assert ("cannot read" in health["settings_error"]) == (what == "deleted"), health["settings_error"]
            assert health["config_version"] == good_version, what
            assert health["status"] == "ok", what
            assert await _retention_s(generator) == 50, f"generator kept its last good retention ({what})"
            before = client.last_seq()
            await client.wait_past(before + 200)

        # A good file, swapped in atomically: applied, and the errors clear.
        for process, document in (
            (generator, {"retention": "40s"}),
            (streamer, {**OPEN_LIMITS, "flushInterval": "30ms"}),
        ):
            process.write_settings(yaml.safe_dump(document))
        new_version = streamer.version_of({**OPEN_LIMITS, "flushInterval": "30ms"})

        async def applied() -> bool:
            health = await streamer.aio.health()
            return health["settings_error"] is None and health["config_version"] == new_version

        await wait_until(applied, what="the streamer to apply the good file")

        async def generator_applied() -> bool:
            return await _retention_s(generator) == 40

        await wait_until(generator_applied, what="the generator to apply the good file")
        await client.wait_past(client.last_seq() + 200)
    assert generator.alive() and streamer.alive()
    assert "Traceback" not in generator.log_text() + streamer.log_text()
    assert_continuous(client, {"cpu", "memory"})
