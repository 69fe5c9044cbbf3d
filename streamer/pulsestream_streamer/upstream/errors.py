"""How the upstream side reports failure, and where a subscription starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc.aio

from pulsestream import refusals

__all__ = ["Start", "UpstreamError"]


class UpstreamError(RuntimeError):
    """The generator could not answer (down, or rejected the request); ``code`` is the gRPC status name.

    ``reason`` and ``metadata`` are the generator's refusal as data (:mod:`pulsestream.refusals`; empty
    when the call failed without one, e.g. the connection dropped): decisions match them, never
    ``str()``, which is the message for people.
    """

    def __init__(self, code: str, message: str, reason: str = "", metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.metadata: Mapping[str, str] = metadata or {}

    @classmethod
    def of(cls, error: grpc.aio.AioRpcError) -> UpstreamError:
        """The error of a failed call, with the refusal's reason and metadata when it carries one."""
        refusal = refusals.refusal_of(error)
        return cls(
            error.code().name,
            str(error.details()),
            refusal.reason if refusal else "",
            refusal.metadata if refusal else None,
        )


@dataclass(frozen=True, slots=True)
class Start:
    """Where a subscription starts: after a sequence (resume), at a time (window), or live."""

    after: int | None = None
    time_ms: int | None = None
