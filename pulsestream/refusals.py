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
from typing import Any, Protocol

import grpc
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = ["CODES", "DOMAIN", "METADATA", "Reason", "Refusal", "refusal_of", "status"]

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
}


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
    info = error_details_pb2.ErrorInfo(
        reason=reason.value,
        domain=DOMAIN,
        metadata={key: _cut(str(value), MAX_VALUE_BYTES) for key, value in metadata.items() if value is not None},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    code = CODES[reason]
    rich = status_pb2.Status(code=code.value[0], message=_cut(message, MAX_MESSAGE_BYTES), details=[detail])
    return rpc_status.to_status(rich)


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
