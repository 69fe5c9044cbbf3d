"""Which generator refusals mean "history lost", and which make the streamer try another replica.

Refusals are told apart by their ErrorInfo reason (``pulsestream.refusals``), never by message
text: the fakes here are built with the generator's own helper, and a real ``follow`` against a
real gRPC server shows that a reworded message changes nothing and an old text proves nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from pulsestream_streamer.core.samples import Sample
from pulsestream_streamer.settings import StreamerSettings
from pulsestream_streamer.upstream.channels import Upstream
from pulsestream_streamer.upstream.errors import Start, UpstreamError
from pulsestream_streamer.upstream.follow import _address_at_fault, _history_lost, follow
from refused import refused, rpc_error

from pulsestream import refusals
from pulsestream.refusals import Reason
from pulsestream.v1 import timeseries_pb2, timeseries_pb2_grpc


@pytest.mark.parametrize(
    ("reason", "metadata", "lost", "failover"),
    [
        (Reason.HISTORY_NOT_RETAINED, {"field": "after_sequence", "retained_from": 5}, True, True),
        (Reason.HISTORY_NOT_RETAINED, {"field": "start_time", "retained_from": 5}, True, True),
        (Reason.START_IN_FUTURE, {"field": "after_sequence", "now": 1}, False, True),
        (Reason.UNKNOWN_SERIES, {"field": "series", "series": "gone"}, False, False),
        (Reason.SERIES_REMOVED, {"series": "gone"}, False, False),
        (Reason.SERVER_DRAINING, {"after_sequence": 7}, False, True),
    ],
)
def test_refusals_are_told_apart(reason: Reason, metadata: dict[str, object], lost: bool, failover: bool) -> None:
    error = UpstreamError.of(refused(reason, **metadata))
    assert _history_lost(error) is lost
    assert _address_at_fault(error) is failover


def test_an_upstream_error_carries_the_refusals_code_reason_and_metadata() -> None:
    error = UpstreamError.of(refused(Reason.SUBSCRIBER_TOO_SLOW, "slow", after_sequence=42, buffer_size=8))
    assert (error.code, error.reason, str(error)) == ("RESOURCE_EXHAUSTED", "SUBSCRIBER_TOO_SLOW", "slow")
    assert error.metadata == {"after_sequence": "42", "buffer_size": "8"}
    plain = UpstreamError.of(rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    assert (plain.code, plain.reason, plain.metadata) == ("UNAVAILABLE", "", {})


def test_the_message_text_decides_nothing() -> None:
    reworded = UpstreamError.of(refused(Reason.HISTORY_NOT_RETAINED, "after_sequence: too old, sorry"))
    assert _history_lost(reworded)
    old_text = "after_sequence: the points after it are no longer retained; unknown series 'x'"
    assert not _history_lost(UpstreamError.of(refused(Reason.BAD_ARGUMENT, old_text, field="after_sequence")))
    assert _address_at_fault(UpstreamError.of(refused(Reason.BAD_ARGUMENT, old_text, field="series")))
    # No ErrorInfo at all (another server on the path): an outage like any other, whatever it says.
    bare = UpstreamError.of(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, old_text))
    assert not _history_lost(bare) and _address_at_fault(bare)


class RefusingGenerator(timeseries_pb2_grpc.TimeSeriesServiceServicer):
    """Refuses every Subscribe with one fixed status."""

    def __init__(self, status: grpc.Status) -> None:
        self.status = status

    async def Subscribe(
        self, request: timeseries_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[timeseries_pb2.SubscribeResponse]:
        await context.abort_with_status(self.status)
        yield timeseries_pb2.SubscribeResponse()  # pragma: no cover (makes this a stream handler)


class RecordingTopic:
    """The :class:`TopicSink` side of ``follow``: records what it was told, in order."""

    series = "cpu"
    resolution = "raw"

    def __init__(self) -> None:
        self.told: list[tuple[str, ...]] = []

    def resume_point(self) -> Start:
        return Start(after=1_000)

    def deliver(self, samples: list[Sample]) -> bool:
        return True

    def upstream_down(self, code: str, message: str) -> None:
        self.told.append(("upstream_down", code, message))

    def upstream_up(self) -> None:
        pass

    def start_lost(self, message: str) -> None:
        self.told.append(("start_lost", message))


async def follow_against(status: grpc.Status) -> RecordingTopic:
    """Run the real ``follow`` against a real server refusing with ``status`` until it first reacted."""
    servicer = RefusingGenerator(status)
    server = grpc.aio.server()
    timeseries_pb2_grpc.add_TimeSeriesServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    upstream = Upstream(
        StreamerSettings.model_validate(
            {"generator_address": [f"127.0.0.1:{port}"], "reconnect_base": "10ms", "reconnect_cap": "100ms"}
        )
    )
    topic = RecordingTopic()
    task = asyncio.create_task(follow(upstream, topic))
    try:
        async with asyncio.timeout(10):
            while not topic.told:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await upstream.close()
        await server.stop(None)
    return topic


async def test_follow_restarts_from_the_window_on_the_history_reason_whatever_the_message_says() -> None:
    status = refusals.status(Reason.HISTORY_NOT_RETAINED, "history? what history", field="after_sequence")
    topic = await follow_against(status)
    assert topic.told[0] == ("start_lost", "history? what history")


async def test_follow_treats_the_old_message_text_under_another_reason_as_an_outage() -> None:
    message = "after_sequence: the points after it are no longer retained (history starts at sequence 5)"
    topic = await follow_against(refusals.status(Reason.START_IN_FUTURE, message, field="after_sequence"))
    assert topic.told[0] == ("upstream_down", "INVALID_ARGUMENT", message)
    assert all(told[0] == "upstream_down" for told in topic.told)
