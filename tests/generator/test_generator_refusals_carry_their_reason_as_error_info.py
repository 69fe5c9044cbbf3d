"""Every refusal the generator sends carries its reason and metadata as google.rpc.ErrorInfo.

Real servers on port 0, real ``grpc.aio`` clients, and the real grpcurl binary; the reasons are
read with :func:`pulsestream.refusals.refusal_of`, the same function the streamer uses. Streams
cut later in their life are checked where those cuts are provoked: a slow subscriber in
``test_generator_cuts_a_slow_subscriber_and_keeps_the_others_at_pace``, draining in
``test_generator_health_drain_and_sigterm_follow_its_lifecycle``, a removed series in
``test_generator_applies_live_settings_to_open_streams``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
import pytest
from generator_streams import StartGenerator, now_ms
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from grpcurl_tool import grpcurl
from pulsestream_generator.hub import EndReason, StreamEnded
from pulsestream_generator.query import Query
from pulsestream_generator.server import GeneratorApp
from pulsestream_generator.timeseries import _REFUSAL

from pulsestream.refusals import CODES, DOMAIN, METADATA, Reason, Refusal, refusal_of
from pulsestream.v1 import random_pb2, random_pb2_grpc, timeseries_pb2, timeseries_pb2_grpc

Request = timeseries_pb2.SubscribeRequest
#: What a case expects of the metadata, given the app and the time the request was made.
Expect = Callable[[GeneratorApp, int], dict[str, str]]


def ts(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=ms % 1000 * 1_000_000)


def _field(name: str) -> Expect:
    return lambda app, now: {"field": name}


CASES: dict[str, tuple[Callable[[int], Request], Reason, Expect]] = {
    "no series": (lambda now: Request(), Reason.BAD_ARGUMENT, _field("series")),
    "duplicate series": (lambda now: Request(series=["cpu", "cpu"]), Reason.BAD_ARGUMENT, _field("series")),
    "too many series": (
        lambda now: Request(series=[f"s{i}" for i in range(65)]),
        Reason.BAD_ARGUMENT,
        _field("series"),
    ),
    "unknown series": (
        lambda now: Request(series=["cpu", "nope", "gone"]),
        Reason.UNKNOWN_SERIES,
        lambda app, now: {"field": "series", "series": "nope,gone"},
    ),
    "unknown resolution": (
        lambda now: Request(series=["cpu"], resolution="2s"),
        Reason.UNKNOWN_RESOLUTION,
        lambda app, now: {"field": "resolution", "resolutions": "raw,1s,5s,1m"},
    ),
    "start in the future": (
        lambda now: Request(series=["cpu"], start_time=ts(now + 60_000)),
        Reason.START_IN_FUTURE,
        _field("start_time"),
    ),
    "resume in the future": (
        lambda now: Request(series=["cpu"], after_sequence=now + 3_600_000),
        Reason.START_IN_FUTURE,
        _field("after_sequence"),
    ),
    "start before retention": (
        lambda now: Request(series=["cpu"], start_time=ts(now - 31_000)),
        Reason.HISTORY_NOT_RETAINED,
        _field("start_time"),
    ),
    "resume before history": (
        lambda now: Request(series=["cpu"], after_sequence=now - 3_600_000),
        Reason.HISTORY_NOT_RETAINED,
        lambda app, now: {"field": "after_sequence", "retained_from": str(app.hub.history.oldest)},
    ),
}


async def refusal_from(call: grpc.aio.Call) -> tuple[grpc.aio.AioRpcError, Refusal]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()  # type: ignore[attr-defined]
    refusal = refusal_of(caught.value)
    assert refusal is not None, f"no ErrorInfo with {caught.value.code()}: {caught.value.details()}"
    return caught.value, refusal


@pytest.mark.parametrize("case", list(CASES))
async def test_each_bad_subscribe_request_carries_its_reason_and_metadata(
    generator: GeneratorApp, stub: timeseries_pb2_grpc.TimeSeriesServiceStub, case: str
) -> None:
    build, reason, expect = CASES[case]
    now = now_ms()
    error, refusal = await refusal_from(stub.Subscribe(build(now)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT == CODES[reason]
    assert refusal.reason == reason
    assert set(refusal.metadata) <= set(METADATA[reason])
    wanted = expect(generator, now)
    assert {key: refusal.metadata.get(key) for key in wanted} == wanted
    assert error.details().startswith(f"{refusal.metadata['field']}:"), "the message for people is unchanged"
    if "now" in refusal.metadata:
        assert now - 5_000 <= int(refusal.metadata["now"]) <= now_ms()
    if case == "start before retention":
        # The oldest start the window allows: at most the time of the request minus the 30 s retention.
        assert int(refusal.metadata["retained_from"]) in range(now - 30_000, now_ms() - 30_000 + 1)


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("GetNumber", random_pb2.NumberRequest(min=5, max=1), "max"),
        ("GetString", random_pb2.StringRequest(length=5000), "length"),
        ("StreamNumbers", random_pb2.StreamNumbersRequest(interval=Duration(nanos=1_000_000)), "interval"),
    ],
)
async def test_random_service_refusals_carry_bad_argument_and_the_field(
    channel: grpc.aio.Channel, method: str, request_: object, field: str
) -> None:
    stub = random_pb2_grpc.RandomServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        call = getattr(stub, method)(request_)
        await (call.read() if method == "StreamNumbers" else call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refusal_of(caught.value) == Refusal(Reason.BAD_ARGUMENT, {"field": field})


async def test_new_streams_refused_while_draining_say_server_draining(generator: GeneratorApp) -> None:
    await generator.drain()
    async with grpc.aio.insecure_channel(generator.address) as channel:
        error, refusal = await refusal_from(
            timeseries_pb2_grpc.TimeSeriesServiceStub(channel).Subscribe(Request(series=["cpu"]))
        )
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert refusal == Refusal(Reason.SERVER_DRAINING, {})
        error, refusal = await refusal_from(
            random_pb2_grpc.RandomServiceStub(channel).StreamNumbers(random_pb2.StreamNumbersRequest())
        )
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert refusal == Refusal(Reason.SERVER_DRAINING, {})


async def test_a_replay_overtaken_by_the_history_trim_ends_with_replay_fell_behind(generator: GeneratorApp) -> None:
    hub = generator.hub
    behind = hub.history.before_oldest - 1_000  # what parse() would refuse: here the hub sees it mid-replay
    stream = hub.stream(Query(series=("cpu",), resolution="raw", width_ms=0, after=behind))
    with pytest.raises(StreamEnded) as caught:
        await anext(stream)
    assert caught.value.reason is EndReason.REPLAY_BEHIND
    assert caught.value.metadata == {"last_sequence": behind}
    assert _REFUSAL[EndReason.REPLAY_BEHIND] is Reason.REPLAY_FELL_BEHIND
    assert CODES[Reason.REPLAY_FELL_BEHIND] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_every_way_a_stream_ends_has_a_refusal_reason() -> None:
    assert set(_REFUSAL) == set(EndReason)


async def test_a_refusal_naming_many_long_series_still_arrives_as_invalid_argument(
    start_generator: StartGenerator,
) -> None:
    # 64 series of 63 characters: the "known" list alone is 4 KiB, and the message now travels twice
    # (grpc-message and the details), which would pass the clients' 8 KiB trailer limit uncut.
    names = [f"s{i:02d}" + "x" * 60 for i in range(64)]
    app = await start_generator(series=names, retention="2s")
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = timeseries_pb2_grpc.TimeSeriesServiceStub(channel)
        # Past the soft limit gRPC rejects trailers at random (more often the larger they are): ask often.
        for _ in range(40):
            error, refusal = await refusal_from(stub.Subscribe(Request(series=["nope" + "y" * 59])))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refusal.reason == Reason.UNKNOWN_SERIES
            assert error.details().startswith("series: unknown series 'nope")


async def test_grpcurl_shows_the_reason_and_metadata_of_a_refusal(generator: GeneratorApp) -> None:
    request = '{"series": ["cpu", "nope"]}'
    plain = await grpcurl("-d", request, generator.address, "pulsestream.v1.TimeSeriesService/Subscribe")
    assert plain.returncode == 64 + 3, plain.stderr
    assert "Message: series: unknown series 'nope'" in plain.stderr
    assert '"reason":"UNKNOWN_SERIES"' in plain.stderr.replace(" ", "")
    formatted = await grpcurl(
        "-format-error", "-d", request, generator.address, "pulsestream.v1.TimeSeriesService/Subscribe"
    )
    assert formatted.returncode == 64 + 3, formatted.stderr
    status = json.loads(formatted.stderr)
    assert status["code"] == 3 and status["message"].startswith("series: unknown series 'nope'")
    assert status["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "UNKNOWN_SERIES",
            "domain": DOMAIN,
            "metadata": {"field": "series", "series": "nope"},
        }
    ]
