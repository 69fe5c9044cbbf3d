"""RandomService: unary numbers and strings, the number stream, and argument checks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from pulsestream_generator.server import GeneratorApp

from pulsestream.refusals import Reason, Refusal, refusal_of
from pulsestream.v1 import random_pb2, random_pb2_grpc


@pytest.fixture
async def random_stub(generator: GeneratorApp) -> AsyncIterator[random_pb2_grpc.RandomServiceStub]:
    channel = grpc.aio.insecure_channel(generator.address)
    yield random_pb2_grpc.RandomServiceStub(channel)
    await channel.close()


async def test_numbers_stay_within_bounds_and_default_to_0_100(random_stub: random_pb2_grpc.RandomServiceStub) -> None:
    values = [(await random_stub.GetNumber(random_pb2.NumberRequest(min=-3, max=3))).value for _ in range(40)]
    assert set(values) <= set(range(-3, 4)) and len(set(values)) > 1
    default = await random_stub.GetNumber(random_pb2.NumberRequest())
    assert 0 <= default.value <= 100
    assert (await random_stub.GetNumber(random_pb2.NumberRequest(min=7, max=7))).value == 7


async def test_strings_have_the_asked_length(random_stub: random_pb2_grpc.RandomServiceStub) -> None:
    assert len((await random_stub.GetString(random_pb2.StringRequest())).value) == 16
    value = (await random_stub.GetString(random_pb2.StringRequest(length=100))).value
    assert len(value) == 100 and value.isalnum()


async def test_stream_numbers_sends_count_numbers_in_sequence(random_stub: random_pb2_grpc.RandomServiceStub) -> None:
    request = random_pb2.StreamNumbersRequest(min=1, max=6, count=5, interval=Duration(nanos=10_000_000))
    responses = [r async for r in random_stub.StreamNumbers(request)]
    assert [r.sequence for r in responses] == [1, 2, 3, 4, 5]
    assert all(1 <= r.value <= 6 for r in responses)
    stamps = [r.timestamp.ToMilliseconds() for r in responses]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 40


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("GetNumber", random_pb2.NumberRequest(min=5, max=1), "max"),
        ("GetString", random_pb2.StringRequest(length=5000), "length"),
        ("StreamNumbers", random_pb2.StreamNumbersRequest(min=2, max=1), "max"),
        ("StreamNumbers", random_pb2.StreamNumbersRequest(interval=Duration(nanos=1_000_000)), "interval"),
        ("StreamNumbers", random_pb2.StreamNumbersRequest(interval=Duration(seconds=7200)), "interval"),
    ],
)
async def test_bad_arguments_get_invalid_argument_naming_the_field(
    random_stub: random_pb2_grpc.RandomServiceStub, method: str, request_: object, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        call = getattr(random_stub, method)(request_)
        if method == "StreamNumbers":
            await call.read()
        else:
            await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}:")
    assert refusal_of(caught.value) == Refusal(Reason.BAD_ARGUMENT, {"field": field})
