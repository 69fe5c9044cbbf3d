"""Refusal reasons travel as google.rpc.ErrorInfo and are read back by reason, whatever the message."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from refused import refused, rpc_error

from pulsestream.refusals import CODES, DOMAIN, METADATA, Reason, Refusal, refusal_of, status

ROOT = Path(__file__).resolve().parents[2]
DETAILS_KEY = "grpc-status-details-bin"


def _trailer(rich: status_pb2.Status) -> tuple[tuple[str, bytes], ...]:
    return ((DETAILS_KEY, rich.SerializeToString()),)


@pytest.mark.parametrize("reason", list(Reason))
def test_every_reason_round_trips_with_its_code_message_and_metadata(reason: Reason) -> None:
    keys = METADATA[reason]
    sent = status(reason, f"{reason.lower()}: people read this", **{key: f"{key}-value" for key in keys})
    assert sent.code == CODES[reason]
    assert sent.details == f"{reason.lower()}: people read this"
    error = refused(reason, sent.details, **{key: f"{key}-value" for key in keys})
    assert error.code() == CODES[reason]
    assert refusal_of(error) == Refusal(reason.value, {key: f"{key}-value" for key in keys})


def test_every_reason_has_a_code_and_documented_metadata_and_names_are_upper_snake() -> None:
    assert set(CODES) == set(METADATA) == set(Reason)
    for reason in Reason:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+", reason.value), reason
        for key in METADATA[reason]:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", key), key  # ErrorInfo: [a-z][a-zA-Z0-9-_]+


def test_metadata_values_become_strings_and_unknown_facts_are_left_out() -> None:
    error = refused(Reason.SUBSCRIBER_TOO_SLOW, after_sequence=1732650000100, buffer_size=None)
    refusal = refusal_of(error)
    assert refusal is not None
    assert refusal.metadata == {"after_sequence": "1732650000100"}
    assert refusal.sequence("after_sequence") == 1732650000100
    assert refusal.sequence("buffer_size") is None


def test_a_status_always_fits_the_clients_trailer_limit_and_short_messages_are_never_cut() -> None:
    huge = "series: unknown series 'x'; known: " + ", ".join("ü" * 63 for _ in range(200))
    sent = status(Reason.UNKNOWN_SERIES, huge, field="series", series="é" * 10_000)
    wire = len(sent.details.encode()) * 3 + sum(len(value) * 4 // 3 + len(key) for key, value in sent.trailing_metadata)
    assert wire < 7 * 1024, wire  # grpc-message is percent-encoded (x3 at worst), -bin values base64 (x4/3)
    assert sent.details.endswith(" ...")
    refusal = refusal_of(rpc_error(sent.code, sent.details, tuple(sent.trailing_metadata)))
    assert refusal is not None and refusal.metadata["series"].endswith(" ...")
    short = "after_sequence: the points after it are no longer retained (history starts at sequence 5)"
    assert status(Reason.HISTORY_NOT_RETAINED, short).details == short


def test_a_call_without_details_or_with_someone_elses_or_tampered_details_is_no_refusal() -> None:
    assert refusal_of(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "no longer retained")) is None
    info = error_details_pb2.ErrorInfo(reason="HISTORY_NOT_RETAINED", domain="example.com")
    other = any_pb2.Any()
    other.Pack(info)
    foreign = status_pb2.Status(code=3, message="m", details=[other])
    assert refusal_of(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "m", _trailer(foreign))) is None
    ours = status(Reason.HISTORY_NOT_RETAINED, "m")
    trailing = tuple(ours.trailing_metadata)
    # A proxy that rewrote the message or the code: the details no longer describe this call.
    assert refusal_of(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "rewritten", trailing)) is None
    assert refusal_of(rpc_error(grpc.StatusCode.UNAVAILABLE, "m", trailing)) is None
    assert refusal_of(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "m", ((DETAILS_KEY, b"\xff\xff"),))) is None


def test_the_domain_is_the_projects_api_group() -> None:
    assert DOMAIN == "pulsestream.io"


def test_the_readme_and_the_proto_document_every_reason_with_its_code_and_metadata() -> None:
    readme = (ROOT / "README.md").read_text()
    # Each service lists the reasons of its own RPCs (TimeSeriesService, IngestService).
    proto = "\n".join(path.read_text() for path in sorted((ROOT / "proto/pulsestream/v1").glob("*.proto")))
    assert f'domain "{DOMAIN}"' in proto and f"`{DOMAIN}`" in readme
    for reason in Reason:
        row = re.search(rf"^\| `{CODES[reason].name}` \| `{reason.value}` \|(?P<metadata>[^|]*)\|", readme, re.M)
        assert row, f"README's Status codes table lacks {reason.value} with {CODES[reason].name}"
        lines = re.findall(rf"^\s*//\s+{reason.value}\s+{CODES[reason].name}\s+(.*)$", proto, re.M)
        assert lines, f"no .proto lists {reason.value} with {CODES[reason].name}"
        for key in METADATA[reason]:
            assert f"`{key}`" in row["metadata"], (reason.value, key)
            assert any(key in keys for keys in lines), (reason.value, key)
