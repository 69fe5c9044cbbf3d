"""A validated ``/v1/stream`` request: what the HTTP layer parsed and the fan-out serves."""

from __future__ import annotations

from dataclasses import dataclass

from pulsestream_streamer.core.cursor import Cursor
from pulsestream_streamer.core.ladder import GENERATOR_WIDTHS, View, view_of
from pulsestream_streamer.core.shape import Format

__all__ = ["StreamRequest"]


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """Series (sorted, unique), resolution, window and format of one stream, and where it resumes.

    ``cursor`` is the decoded ``Last-Event-ID`` (None for a fresh stream); ``cursor_error`` says why
    an id that was sent could not be read, so the stream starts with a ``"reset": true`` snapshot.
    ``max_points`` is the request's ``maxPoints``; ``reduced`` the view it chose (None: the
    resolution's own, see :func:`~pulsestream_streamer.core.ladder.choose`).
    """

    series: tuple[str, ...]
    resolution: str
    window_ms: int
    fmt: Format
    cursor: Cursor | None = None
    cursor_error: str | None = None
    max_points: int | None = None
    reduced: View | None = None

    @property
    def view(self) -> View:
        """What the stream's points are: the resolution, or the coarser view ``maxPoints`` chose."""
        return self.reduced or view_of(GENERATOR_WIDTHS[self.resolution])
