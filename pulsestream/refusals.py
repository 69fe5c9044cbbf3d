"""Why the generator refused or ended a stream, as data both services share (issue 12, debt 4).

Every status the generator ends a call with on purpose carries, besides its
code and its human message, a ``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer (the gRPC "richer error model") with one
``google.rpc.ErrorInfo`` detail (AIP-193):

- ``reason``: a :class:`Reason`, stable UPPER_SNAKE_CASE: what a program
  matches on;
- ``domain``: :data:`DOMAIN`, so a reason from anything else on the path (a
  proxy, another service) is never taken for ours;
- ``metadata``: short facts as strings, keyed like the request fields they
  refer to (``field``, ``series``, ``after_sequence``, ...); see
  :data:`METADATA` for which reason carries which.

The message stays what it was for people (grpcurl prints it, the README
quotes it) and may be reworded at any time: consumers match the reason,
never the text. The code of a reason is fixed here (:data:`CODES`), so a
reason can only travel with its documented status code.

Both services import this one module: the generator builds statuses with
:func:`status` (``await context.abort_with_status(status(...))``), the
streamer reads them back with :func:`refusal_of`. ``grpcurl`` prints the
detail too (as JSON under ``Details:``, or in ``-format-error`` output).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import grpc
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "CODES",
    "DOMAIN",
    "METADATA",
    "RETRY_INFO_KEY",
    "Reason",
    "Refusal",
    "refusal_of",
    "retry_after_of",
    "status",
]

#: ``ErrorInfo.domain`` of every pulsestream refusal (the project's API group, as for the CRD).
DOMAIN = "pulsestream.io"

#: The whole status travels in one trailer block, which gRPC clients cap at 8 KiB (soft limit: above it
#: a call fails with RESOURCE_EXHAUSTED instead of the real status), and the message is in it twice
#: (``grpc-message``, percent-encoded, and inside the base64 details). These bounds keep a refusal at
#: about 6 KiB at worst; real messages are a few hundred bytes and are never cut.
MAX_MESSAGE_BYTES = 1024
MAX_VALUE_BYTES = 256
_CUT = " ..."


class Reason(enum.StrEnum):
    """Why a call was refused or a stream ended: ``ErrorInfo.reason``. Append only; never rename."""

    #: INVALID_ARGUMENT: a request field is malformed or out of range (``field``).
    BAD_ARGUMENT = "BAD_ARGUMENT"
    #: INVALID_ARGUMENT: a series this generator does not produce (``field``, ``series``).
    UNKNOWN_SERIES = "UNKNOWN_SERIES"
    #: INVALID_ARGUMENT: a resolution this generator does not aggregate to (``field``, ``resolutions``).
    UNKNOWN_RESOLUTION = "UNKNOWN_RESOLUTION"
    #: INVALID_ARGUMENT: ``start_time`` or ``after_sequence`` lies in the future (``field``, ``now``).
    START_IN_FUTURE = "START_IN_FUTURE"
    #: INVALID_ARGUMENT: the history the start asks for is no longer kept (``field``, ``retained_from``).
    HISTORY_NOT_RETAINED = "HISTORY_NOT_RETAINED"
    #: RESOURCE_EXHAUSTED: the subscriber fell more than ``bufferSize`` messages behind
    #: (``after_sequence`` to resume from, ``buffer_size``).
    SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
    #: RESOURCE_EXHAUSTED: the replay was overtaken by the history's trimming (``last_sequence``).
    REPLAY_FELL_BEHIND = "REPLAY_FELL_BEHIND"
    #: UNAVAILABLE: the server is shutting down (``after_sequence`` when the stream had started).
    SERVER_DRAINING = "SERVER_DRAINING"
    #: NOT_FOUND: a series of the stream was removed by the live settings (``series``).
    SERIES_REMOVED = "SERIES_REMOVED"
    #: INVALID_ARGUMENT: a published point is bad: its value is not finite, its series name breaks the rules,
    #: its timestamp is too far ahead or older than the retention (``index``, ``series``, ``field``, and
    #: ``retained_from`` or ``now`` for a timestamp). Nothing of the batch was stored.
    BAD_POINT = "BAD_POINT"
    #: INVALID_ARGUMENT: a point names a synthetic series, which only the generator writes (``index``, ``series``).
    SYNTHETIC_SERIES = "SYNTHETIC_SERIES"
    #: INVALID_ARGUMENT: a point names a series nobody declared, and undeclared series are refused (``index``,
    #: ``series``).
    UNDECLARED_SERIES = "UNDECLARED_SERIES"
    #: RESOURCE_EXHAUSTED: a batch holds more points than one request may (``max_points``): split it.
    TOO_MANY_POINTS = "TOO_MANY_POINTS"
    #: RESOURCE_EXHAUSTED: a point would create a series beyond the limit of published series (``index``,
    #: ``series``, ``max_series``).
    TOO_MANY_SERIES = "TOO_MANY_SERIES"
    #: RESOURCE_EXHAUSTED: more batches in flight than the generator takes at once (``max_in_flight``,
    #: ``retry_after_ms``); a ``google.rpc.RetryInfo`` says when to resend the same batch.
    INGEST_BUSY = "INGEST_BUSY"
    #: UNAUTHENTICATED: ingest needs ``authorization: Bearer TOKEN`` metadata and the call had none.
    TOKEN_REQUIRED = "TOKEN_REQUIRED"
    #: UNAUTHENTICATED: the call's bearer token is not one of the configured ingest tokens.
    TOKEN_INVALID = "TOKEN_INVALID"
    #: UNAVAILABLE: the shared published history (GENERATOR_HISTORY_URL) cannot be written right now; nothing of
    #: the batch was acknowledged: resend the same batch (``backend``).
    HISTORY_UNAVAILABLE = "HISTORY_UNAVAILABLE"


#: The status code each reason travels with.
CODES: Mapping[Reason, grpc.StatusCode] = {
    Reason.BAD_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.UNKNOWN_SERIES: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.UNKNOWN_RESOLUTION: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.START_IN_FUTURE: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.HISTORY_NOT_RETAINED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.SUBSCRIBER_TOO_SLOW: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.REPLAY_FELL_BEHIND: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.SERVER_DRAINING: grpc.StatusCode.UNAVAILABLE,
    Reason.SERIES_REMOVED: grpc.StatusCode.NOT_FOUND,
    Reason.BAD_POINT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.SYNTHETIC_SERIES: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.UNDECLARED_SERIES: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.TOO_MANY_POINTS: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.TOO_MANY_SERIES: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.INGEST_BUSY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.TOKEN_REQUIRED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.TOKEN_INVALID: grpc.StatusCode.UNAUTHENTICATED,
    Reason.HISTORY_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}

#: The metadata keys each reason may carry (documentation, checked by the tests and the README table).
#: Sequences and times are epoch milliseconds, as decimal strings; lists of names are comma-separated.
METADATA: Mapping[Reason, tuple[str, ...]] = {
    Reason.BAD_ARGUMENT: ("field",),
    Reason.UNKNOWN_SERIES: ("field", "series"),
    Reason.UNKNOWN_RESOLUTION: ("field", "resolutions"),
    Reason.START_IN_FUTURE: ("field", "now"),
    Reason.HISTORY_NOT_RETAINED: ("field", "retained_from"),
    Reason.SUBSCRIBER_TOO_SLOW: ("after_sequence", "buffer_size"),
    Reason.REPLAY_FELL_BEHIND: ("last_sequence",),
    Reason.SERVER_DRAINING: ("after_sequence",),
    Reason.SERIES_REMOVED: ("series",),
    Reason.BAD_POINT: ("index", "series", "field", "retained_from", "now"),
    Reason.SYNTHETIC_SERIES: ("index", "series"),
    Reason.UNDECLARED_SERIES: ("index", "series"),
    Reason.TOO_MANY_POINTS: ("max_points",),
    Reason.TOO_MANY_SERIES: ("index", "series", "max_series"),
    Reason.INGEST_BUSY: ("max_in_flight", "retry_after_ms"),
    Reason.TOKEN_REQUIRED: (),
    Reason.TOKEN_INVALID: (),
    Reason.HISTORY_UNAVAILABLE: ("backend",),
}

#: The trailer OpenTelemetry's OTLP exporters read a ``google.rpc.RetryInfo`` from (besides the status details).
RETRY_INFO_KEY = "google.rpc.retryinfo-bin"


def _cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` UTF-8 bytes, marked when cut (never splits a character)."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - len(_CUT)].decode(errors="ignore") + _CUT


def status(reason: Reason, message: str, **metadata: object) -> grpc.Status:
    """The ``grpc.Status`` to end a call with: ``reason``'s code, ``message``, and the ErrorInfo detail.

    Metadata values are turned into strings; ``None`` values are left out (a fact not known here). The
    message and the values are cut to :data:`MAX_MESSAGE_BYTES` and :data:`MAX_VALUE_BYTES` so the
    trailer always fits the clients' limit.
    """
    return _status(reason, message, metadata, None)


def status_retry_after(reason: Reason, message: str, retry_after: float, **metadata: object) -> grpc.Status:
    """:func:`status` with a ``google.rpc.RetryInfo`` asking to retry after ``retry_after`` seconds.

    The RetryInfo is a status detail (gRPC's richer error model) and, as the same message, the
    :data:`RETRY_INFO_KEY` trailer, which is where OpenTelemetry's OTLP exporters look for it.
    """
    return _status(reason, message, metadata, retry_after)


def _status(reason: Reason, message: str, metadata: Mapping[str, object], retry_after: float | None) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(
        reason=reason.value,
        domain=DOMAIN,
        metadata={key: _cut(str(value), MAX_VALUE_BYTES) for key, value in metadata.items() if value is not None},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    retry: error_details_pb2.RetryInfo | None = None
    if retry_after is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(max(0, round(retry_after * 1e9)))
        packed = any_pb2.Any()
        packed.Pack(retry)
        details.append(packed)
    code = CODES[reason]
    rich = status_pb2.Status(code=code.value[0], message=_cut(message, MAX_MESSAGE_BYTES), details=details)
    converted = rpc_status.to_status(rich)
    if retry is None:
        return converted
    return _Status(
        converted.code,
        converted.details,
        (*converted.trailing_metadata, (RETRY_INFO_KEY, retry.SerializeToString())),
    )


class _StatusFields(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailing_metadata: Any


class _Status(_StatusFields, grpc.Status):  # type: ignore[misc]  # grpc.Status is untyped
    """A ``grpc.Status`` with extra trailers (``rpc_status.to_status`` makes one with the details only)."""


def retry_after_of(call: _FinishedCall) -> float | None:
    """The delay (seconds) a refusal's ``google.rpc.RetryInfo`` asks for, or ``None`` when it has none.

    Read from the status details first, then from the :data:`RETRY_INFO_KEY` trailer.
    """
    try:
        rich = rpc_status.from_call(call)
    except (ValueError, message.DecodeError):
        rich = None
    for detail in rich.details if rich is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToNanoseconds()) / 1e9
    for key, value in call.trailing_metadata() or ():
        if key == RETRY_INFO_KEY and isinstance(value, bytes):
            info = error_details_pb2.RetryInfo()
            try:
                info.ParseFromString(value)
            except message.DecodeError:
                return None
            return float(info.retry_delay.ToNanoseconds()) / 1e9
    return None


class _FinishedCall(Protocol):
    """What :func:`refusal_of` reads: a finished call or its error (``grpc.aio.AioRpcError``, ``grpc.RpcError``)."""

    def code(self) -> Any: ...

    def details(self) -> Any: ...

    def trailing_metadata(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """A pulsestream refusal read back from a call: its reason (a :class:`Reason` value) and metadata.

    ``reason`` is a plain string, so a reason added by a newer generator is still read (and matches
    no known one) instead of failing.
    """

    reason: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def sequence(self, key: str) -> int | None:
        """A sequence (or time) from the metadata as an int, ``None`` when absent or unreadable."""
        value = self.metadata.get(key, "")
        return int(value) if value.isdigit() else None


def refusal_of(call: _FinishedCall) -> Refusal | None:
    """The pulsestream ErrorInfo of a failed call, or ``None`` when it carries none.

    ``None`` too when the status details disagree with the call's code or message (rewritten on the
    way), cannot be decoded, or come from another :data:`DOMAIN`: only a refusal the generator sent,
    intact, is matched by reason.
    """
    try:
        rich = rpc_status.from_call(call)
    except (ValueError, message.DecodeError):
        return None
    if rich is None:
        return None
    for detail in rich.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == DOMAIN:
                return Refusal(reason=info.reason, metadata=dict(info.metadata))
    return None
