"""Which generator refusals mean "history lost", and which make the streamer try another replica."""

import pytest
from pulsestream_streamer.upstream.errors import UpstreamError
from pulsestream_streamer.upstream.follow import _address_at_fault, _history_lost


@pytest.mark.parametrize(
    ("code", "message", "lost", "failover"),
    [
        (
            "INVALID_ARGUMENT",
            "after_sequence: the points after it are no longer retained (history starts at sequence 5)",
            True,
            True,
        ),
        ("INVALID_ARGUMENT", "start_time: older than the retention window (600000 ms)", True, True),
        ("INVALID_ARGUMENT", "after_sequence: 99 is in the future (now is 1, sequences are epoch ms)", False, True),
        ("INVALID_ARGUMENT", "series: unknown series 'gone'; known: cpu", False, False),
        ("NOT_FOUND", "series gone was removed", False, False),
        ("UNAVAILABLE", "server draining, reconnect", False, True),
    ],
)
def test_refusals_are_told_apart(code: str, message: str, lost: bool, failover: bool) -> None:
    error = UpstreamError(code, message)
    assert _history_lost(error) is lost
    assert _address_at_fault(error) is failover
