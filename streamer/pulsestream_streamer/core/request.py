"""A validated ``/v1/stream`` request: what the HTTP layer parsed and the fan-out serves."""

from __future__ import annotations

from dataclasses import dataclass

from pulsestream_streamer.core.cursor import Cursor
from pulsestream_streamer.core.shape import Format

__all__ = ["StreamRequest"]


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """Series (sorted, unique), resolution, window and format of one stream, and where it resumes.

    ``cursor`` is the decoded ``Last-Event-ID`` (None for a fresh stream); ``cursor_error`` says why
    an id that was sent could not be read, so the stream starts with a ``"reset": true`` snapshot.
    """

    series: tuple[str, ...]
    resolution: str
    window_ms: int
    fmt: Format
    cursor: Cursor | None = None
    cursor_error: str | None = None
