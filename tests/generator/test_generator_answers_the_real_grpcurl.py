"""The real grpcurl binary (v1.8.6) against a real generator: reflection, describe, stream, health."""

from __future__ import annotations

import json

from grpcurl_tool import grpcurl, json_objects
from pulsestream_generator.server import GeneratorApp


async def test_grpcurl_lists_and_describes_the_services_through_reflection(generator: GeneratorApp) -> None:
    listed = await grpcurl(generator.address, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",  # what current grpcurl, Postman and grpcui ask first
        "grpc.reflection.v1alpha.ServerReflection",
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        "pulsestream.v1.IngestService",
        "pulsestream.v1.RandomService",
        "pulsestream.v1.TimeSeriesService",
    }
    described = await grpcurl(generator.address, "describe", "pulsestream.v1.TimeSeriesService")
    assert described.returncode == 0, described.stderr
    assert (
        "rpc Subscribe ( .pulsestream.v1.SubscribeRequest ) returns ( stream .pulsestream.v1.SubscribeResponse )"
        in (described.stdout)
    )
    message = await grpcurl(generator.address, "describe", "pulsestream.v1.Point")
    assert "uint64 previous_sequence" in message.stdout


async def test_grpcurl_subscribe_streams_several_messages_until_max_time(generator: GeneratorApp) -> None:
    result = await grpcurl(
        "-d", '{"series": ["cpu", "memory"]}', "-max-time", "1.5", generator.address,
        "pulsestream.v1.TimeSeriesService/Subscribe",
    )  # fmt: skip
    assert result.returncode == 68, result.stderr  # 64 + DEADLINE_EXCEEDED: cut by -max-time
    messages = json_objects(result.stdout)
    assert len(messages) >= 5
    first = messages[0]["points"]
    assert isinstance(first, list)
    assert [p["series"] for p in first] == ["cpu", "memory"]
    assert {"sequence", "timestamp", "value", "previous_sequence"} <= set(first[0])


async def test_grpcurl_health_check_says_serving_and_bad_arguments_say_invalid_argument(
    generator: GeneratorApp,
) -> None:
    health = await grpcurl(generator.address, "grpc.health.v1.Health/Check")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "SERVING"}
    named = await grpcurl("-d", '{"service": "pulsestream.v1.TimeSeriesService"}', generator.address,
                          "grpc.health.v1.Health/Check")  # fmt: skip
    assert json.loads(named.stdout) == {"status": "SERVING"}
    bad = await grpcurl("-d", '{"series": ["nope"]}', generator.address, "pulsestream.v1.TimeSeriesService/Subscribe")
    assert bad.returncode == 64 + 3, bad.stderr  # INVALID_ARGUMENT
    assert "unknown series 'nope'" in bad.stderr
