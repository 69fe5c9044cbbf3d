"""What a new user or an attacker found at the generator's edges (issue 18, items 2, 3, 7, 10).

A second generator on a taken port started and split the clients with the first (gRPC's
SO_REUSEPORT); a taken metrics port gave a 44-line traceback; garbage protobuf got UNKNOWN and an
ERROR traceback per call; health did not know RandomService; only reflection v1alpha was served.
"""

from __future__ import annotations

import logging
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from loopback import free_port, port_open
from pulsestream_generator.server import GeneratorApp
from services import Stack, run_to_exit

from pulsestream import refusals
from pulsestream.refusals import Reason


def _one_line_exit(**env: str) -> str:
    """``pulsestream-generator`` with ``env`` refuses to start: exit status 2 and one line of stderr, that line."""
    done = run_to_exit("pulsestream-generator", {"GENERATOR_RETENTION": "30s", "GENERATOR_METRICS_PORT": "0", **env})
    text = done.stderr
    assert done.returncode == 2, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text and "Event loop is closed" not in text, text
    return lines[0]


@pytest.mark.e2e
def test_a_second_generator_on_a_taken_port_refuses_to_start_and_names_the_setting(stack: Stack) -> None:
    first = stack.generator(GENERATOR_RETENTION="30s")
    line = _one_line_exit(GENERATOR_PORT=str(first.port))
    assert line.startswith("pulsestream-generator: GENERATOR_PORT=") and "in use" in line
    assert first.alive(), "the first one keeps serving"


def test_a_taken_metrics_port_is_one_line_naming_the_setting_and_nothing_keeps_running() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1]
        port = free_port()
        line = _one_line_exit(GENERATOR_PORT=str(port), GENERATOR_METRICS_PORT=str(metrics_port))
    assert line.startswith(f"pulsestream-generator: GENERATOR_METRICS_PORT={metrics_port}:"), line
    assert not port_open(port), "the gRPC port was released"


@pytest.mark.parametrize(
    ("method", "streaming"),
    [
        ("/pulsestream.v1.TimeSeriesService/ListSeries", False),
        ("/pulsestream.v1.TimeSeriesService/Subscribe", True),
        ("/pulsestream.v1.IngestService/Publish", False),
        ("/pulsestream.v1.RandomService/GetNumber", False),
        ("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", False),
    ],
)
async def test_garbage_protobuf_is_invalid_argument_with_one_debug_line(
    generator: GeneratorApp, method: str, streaming: bool, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = b"\xff\xff\xff\x07garbage"
    with caplog.at_level(logging.DEBUG):
        async with grpc.aio.insecure_channel(generator.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                if streaming:
                    async for _ in channel.unary_stream(method)(garbage):
                        pass
                else:
                    await channel.unary_unary(method)(garbage)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    refusal = refusals.refusal_of(refused.value)
    assert refusal is not None and refusal.reason == Reason.BAD_ARGUMENT
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    assert [r for r in caplog.records if "undecodable request" in r.getMessage()]


async def test_health_knows_every_served_service(generator: GeneratorApp) -> None:
    async with grpc.aio.insecure_channel(generator.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "pulsestream.v1.TimeSeriesService", "pulsestream.v1.RandomService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_reflection_v1_lists_and_describes_like_v1alpha(generator: GeneratorApp) -> None:
    def ask(**request: object) -> bytes:
        return reflection_pb2.ServerReflectionRequest(**request).SerializeToString()  # same wire format as v1

    async with grpc.aio.insecure_channel(generator.address) as channel:
        v1 = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        call = v1()
        await call.write(ask(list_services=""))
        listed = await call.read()
        await call.write(ask(file_containing_symbol="grpc.reflection.v1.ServerReflection"))
        described = await call.read()
        await call.write(ask(file_containing_symbol="pulsestream.v1.TimeSeriesService"))
        ours = await call.read()
        await call.done_writing()
    names = {service.name for service in listed.list_services_response.service}
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert "pulsestream.v1.TimeSeriesService" in names and "pulsestream.v1.IngestService" in names
    assert described.file_descriptor_response.file_descriptor_proto, described
    assert ours.file_descriptor_response.file_descriptor_proto, ours
