"""How the upstream side reports failure, and where a subscription starts."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Start", "UpstreamError"]


class UpstreamError(RuntimeError):
    """The generator could not answer (down, or rejected the request); ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Start:
    """Where a subscription starts: after a sequence (resume), at a time (window), or live."""

    after: int | None = None
    time_ms: int | None = None
