"""Lifecycle: health, drain, SIGTERM on the real console script, lifecycle logs, metrics, bad settings."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from generator_streams import StartGenerator, read_messages
from grpc_health.v1 import health_pb2, health_pb2_grpc
from loopback import free_port
from pulsestream_generator.server import GeneratorApp
from pulsestream_generator.settings import GeneratorSettings
from services import Generator, run_to_exit

from pulsestream.envsettings import SettingsError
from pulsestream.refusals import Reason, refusal_of
from pulsestream.v1 import random_pb2, random_pb2_grpc, timeseries_pb2, timeseries_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def check(channel: grpc.aio.Channel, service: str) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return int(response.status)


@pytest.mark.fault
async def test_health_is_serving_then_not_serving_while_draining_and_streams_end_unavailable(
    generator: GeneratorApp,
) -> None:
    async with grpc.aio.insecure_channel(generator.address) as channel:
        assert await check(channel, "") == SERVING
        assert await check(channel, "pulsestream.v1.TimeSeriesService") == SERVING
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING
        stub = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)
        live = stub.Subscribe(timeseries_pb2.SubscribeRequest(series=["cpu"]))
        numbers = random_pb2_grpc.RandomServiceStub(channel).StreamNumbers(random_pb2.StreamNumbersRequest(count=0))
        await read_messages(live, 2)
        await numbers.read()

        await generator.drain()

        assert (await watch.read()).status == NOT_SERVING
        assert await check(channel, "") == NOT_SERVING
        assert await check(channel, "pulsestream.v1.TimeSeriesService") == NOT_SERVING
        for call in (live, numbers):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async with asyncio.timeout(5):
                    while True:
                        await call.read()
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "draining" in caught.value.details()
            refusal = refusal_of(caught.value)
            assert refusal is not None and refusal.reason == Reason.SERVER_DRAINING
            # The time-series stream says where to resume, as data; random numbers are not resumable.
            cursor = re.search(r"after_sequence=(\d+)", caught.value.details())
            assert refusal.metadata == ({"after_sequence": cursor[1]} if cursor else {})
        assert "after_sequence=" in str(await live.details())
        refused = stub.Subscribe(timeseries_pb2.SubscribeRequest(series=["cpu"]))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await refused.read()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        watch.cancel()


async def test_stream_lifecycle_is_logged_at_debug_level(
    generator: GeneratorApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pulsestream_generator")
    async with grpc.aio.insecure_channel(generator.address) as channel:
        stub = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)
        call = stub.Subscribe(timeseries_pb2.SubscribeRequest(series=["cpu", "memory"], resolution="raw"))
        await read_messages(call, 3)
        call.cancel()
        bad = stub.Subscribe(timeseries_pb2.SubscribeRequest(series=["nope"]))
        with pytest.raises(grpc.aio.AioRpcError):
            await bad.read()
        async with asyncio.timeout(5):
            while not any(r.getMessage() == "stream closed" for r in caplog.records):
                await asyncio.sleep(0.01)
    opened = next(r for r in caplog.records if r.getMessage() == "stream opened")
    closed = next(r for r in caplog.records if r.getMessage() == "stream closed")
    rejected = next(r for r in caplog.records if r.getMessage().startswith("stream rejected"))
    assert opened.levelno == closed.levelno == rejected.levelno == logging.DEBUG
    assert opened.__dict__["peer"].startswith("ipv") and opened.__dict__["series"] == "cpu,memory"
    assert closed.__dict__["reason"] == "cancelled"
    assert closed.__dict__["points_sent"] >= 6
    assert "series" in rejected.getMessage()


@pytest.mark.fault
async def test_sigterm_drains_the_real_process_within_the_grace_period(tmp_path: Path) -> None:
    generator = Generator(
        free_port(),
        tmp_path / "stderr.log",
        {
            "GENERATOR_FREQUENCY": "20ms",
            "GENERATOR_RETENTION": "30s",
            "GENERATOR_GRACE_PERIOD": "5s",
            "LOG_LEVEL": "debug",
        },
        stdout=tmp_path / "stdout.log",
    )
    try:
        generator.start()
        await generator.aio.wait_ready()
        metrics = await generator.aio.metrics()
        assert "pulsestream_generator_points_produced_total" in {sample.name for sample in metrics.samples}
        async with grpc.aio.insecure_channel(generator.address) as channel:
            call = timeseries_pb2_grpc.TimeSeriesServiceStub(channel).Subscribe(
                timeseries_pb2.SubscribeRequest(series=["cpu", "latency"])
            )
            await read_messages(call, 3)
            sent_at = time.monotonic()
            generator.signal(signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async with asyncio.timeout(5):
                    while True:
                        await call.read()
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "server draining, reconnect" in caught.value.details()
        code = await generator.aio.wait_exit(10)
        elapsed = time.monotonic() - sent_at
        assert code == 0
        assert elapsed < 5, f"took {elapsed:.1f}s, beyond the 5s grace period"
    finally:
        generator.kill()
    log = generator.log_text()
    for line in (
        "received SIGTERM",
        "draining: health NOT_SERVING",
        "draining: refusing new streams, ending 1 in flight",
        "draining: all streams ended",
        "stopping gRPC server",
        "generator stopped",
    ):
        assert line in log, f"missing log line {line!r} in:\n{log}"
    assert "DEBUG" in log and "stream opened" in log and "reason=draining" in log


def test_a_bad_environment_variable_exits_2_with_a_message_naming_it() -> None:
    env = {"GENERATOR_FREQUENCY": "fast", "GENERATOR_PORT": "0"}
    result = run_to_exit([sys.executable, "-m", "pulsestream_generator"], env, timeout=30)
    assert result.returncode == 2
    assert "GENERATOR_FREQUENCY='fast' is invalid" in result.stderr


async def test_metrics_come_from_the_apps_own_registry(start_generator: StartGenerator) -> None:
    one = await start_generator(frequency="20ms")
    two = await start_generator(frequency="20ms")
    async with grpc.aio.insecure_channel(one.address) as channel:
        call = timeseries_pb2_grpc.TimeSeriesServiceStub(channel).Subscribe(
            timeseries_pb2.SubscribeRequest(series=["cpu"])
        )
        await read_messages(call, 3)
        assert one.metrics.registry.get_sample_value("pulsestream_generator_subscribers", {"resolution": "raw"}) == 1
        call.cancel()

    def sample(app: GeneratorApp, name: str, labels: dict[str, str] | None = None) -> float:
        return app.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    async with asyncio.timeout(5):
        while sample(one, "pulsestream_generator_stream_ends_total", {"rpc": "Subscribe", "reason": "cancelled"}) < 1:
            await asyncio.sleep(0.01)
    assert sample(one, "pulsestream_generator_points_sent_total") >= 3
    assert sample(one, "pulsestream_generator_stream_starts_total", {"rpc": "Subscribe"}) == 1
    assert sample(two, "pulsestream_generator_stream_starts_total", {"rpc": "Subscribe"}) == 0
    assert sample(two, "pulsestream_generator_points_produced_total") > 0


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by the real openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is missing and CI=true")
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_server_tls_serves_a_client_that_trusts_the_certificate(
    start_generator: StartGenerator, self_signed: tuple[Path, Path]
) -> None:
    cert, key = self_signed
    app = await start_generator(tls_cert_file=str(cert), tls_key_file=str(key))
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    async with grpc.aio.secure_channel(app.address, credentials) as channel:
        listed = await timeseries_pb2_grpc.TimeSeriesServiceStub(channel).ListSeries(timeseries_pb2.ListSeriesRequest())
    assert [s.name for s in listed.series] == ["cpu", "memory", "requests", "latency"]
    async with grpc.aio.insecure_channel(app.address) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await timeseries_pb2_grpc.TimeSeriesServiceStub(plain).ListSeries(
                timeseries_pb2.ListSeriesRequest(), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_needs_both_certificate_and_key() -> None:
    with pytest.raises(SettingsError, match="GENERATOR_TLS_CERT_FILE and GENERATOR_TLS_KEY_FILE must be set together"):
        GeneratorSettings.from_env({"GENERATOR_TLS_CERT_FILE": "/x.pem"})
