"""``/v1/stream`` query parameters: validated into a :class:`~pulsestream_streamer.core.request.StreamRequest`.

Every problem is a :class:`BadParameter` naming the parameter, which the app
turns into ``400`` with a JSON body. A series the caller may not read is a
:class:`Forbidden` (``403``) naming it, checked before the catalogue is, so
neither the answer nor its list of known series tells a caller about series
outside its scope. A ``Last-Event-ID`` that is not a cursor
this streamer can read is *not* an error: the stream starts with a
``"reset": true`` snapshot (DESIGN.md: never silently ignored). Only an id too
long to be one of ours is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from pulsestream.durations import parse_seconds
from pulsestream.spec import RESOLUTIONS, SERIES_NAME_PATTERN
from pulsestream_streamer.core import cursor as cursors
from pulsestream_streamer.core import ladder
from pulsestream_streamer.core.catalogue import Catalogue
from pulsestream_streamer.core.request import StreamRequest
from pulsestream_streamer.core.shape import FORMATS
from pulsestream_streamer.settings import StreamerSettings

__all__ = ["BadParameter", "Forbidden", "parse_stream_request"]

_NAME = re.compile(SERIES_NAME_PATTERN)
_MAX_ID = 1024


class BadParameter(ValueError):
    """A request parameter is wrong; ``parameter`` names it, ``str()`` says what is allowed."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


class Forbidden(Exception):
    """The caller may not read ``series`` (``None``: none of the series on offer); ``str()`` says so."""

    def __init__(self, series: str | None, message: str) -> None:
        super().__init__(message)
        self.series = series


def _everything(name: str) -> bool:
    return True


def _named(raw: str, catalogue: Catalogue, allowed: Callable[[str], bool], offered: list[str]) -> list[str]:
    """The names of ``?series=``: well formed, in scope (else :class:`Forbidden`), then known."""
    names = [part.strip() for part in raw.split(",")]
    if not raw.strip() or any(not name for name in names):
        raise BadParameter("series", "series must be a comma-separated list of series names, e.g. cpu,memory")
    bad = [name for name in names if not _NAME.match(name)]
    if bad:
        raise BadParameter("series", f"not a series name: {bad[0][:64]!r}")
    denied = next((name for name in names if not allowed(name)), None)
    if denied is not None:
        raise Forbidden(denied, f"this credential may not read the series {denied!r}")
    unknown = [name for name in names if catalogue.series and name not in catalogue.series]
    if unknown:
        raise BadParameter("series", f"unknown series {unknown[0]!r}; known: {', '.join(offered)}")
    return names


def _series(
    raw: str | None, catalogue: Catalogue, settings: StreamerSettings, allowed: Callable[[str], bool]
) -> tuple[str, ...]:
    offered = [name for name in catalogue.series if allowed(name)]
    if raw is not None:
        names = _named(raw, catalogue, allowed, offered)
    elif catalogue.series and not offered:
        raise Forbidden(None, "this credential may read none of the series on offer")
    else:
        names = offered
    unique = tuple(sorted(set(names)))
    if not unique:
        raise BadParameter("series", "no series available")
    if len(unique) > settings.max_series:
        raise BadParameter("series", f"at most {settings.max_series} series per stream, got {len(unique)}")
    return unique


def _max_points(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    low, high = ladder.MIN_POINTS, ladder.MAX_POINTS
    message = f"maxPoints must be an integer from {low} to {high} (points per series, e.g. the chart's width in pixels)"
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise BadParameter("maxPoints", message)
    value = int(text)
    if not low <= value <= high:
        raise BadParameter("maxPoints", message)
    return value


def parse_stream_request(
    query: Mapping[str, str],
    last_event_id: str | None,
    catalogue: Catalogue,
    settings: StreamerSettings,
    allowed: Callable[[str], bool] = _everything,
) -> StreamRequest:
    """Validate the query (and the ``Last-Event-ID`` header, which wins over ``lastEventId``).

    ``allowed`` says which series the caller may read (the default: all); without ``series`` a stream
    carries every series on offer that it may read.
    """
    series = _series(query.get("series"), catalogue, settings, allowed)

    resolution = query.get("resolution") or "raw"
    if resolution not in RESOLUTIONS or (catalogue.known and resolution not in catalogue.resolutions):
        served = ", ".join(catalogue.resolutions if catalogue.known else RESOLUTIONS)
        raise BadParameter("resolution", f"resolution must be one of {served}")

    window_text = query.get("window")
    if window_text is None or window_text == "":
        window_ms = settings.default_window.millis
    else:
        try:
            window_ms = round(parse_seconds(window_text) * 1000)
        except ValueError as error:
            raise BadParameter("window", str(error)) from None
        except OverflowError:  # hundreds of digits parse to an infinite float, which round() refuses
            raise BadParameter("window", f"window must be at most {settings.max_window}") from None
        if window_ms > settings.max_window.millis:
            raise BadParameter("window", f"window must be at most {settings.max_window}")

    max_points = _max_points(query.get("maxPoints"))
    reduced = ladder.choose(resolution, window_ms, max_points, catalogue.frequency_ms) if max_points else None

    fmt = query.get("format") or "d3"
    if fmt not in FORMATS:
        raise BadParameter("format", "format must be d3, table or columns")

    text = last_event_id if last_event_id is not None else query.get("lastEventId")
    cursor: cursors.Cursor | None = None
    cursor_error: str | None = None
    if text is not None and text.strip():
        if len(text) > _MAX_ID:
            raise BadParameter("lastEventId", f"lastEventId is longer than {_MAX_ID} characters")
        try:
            cursor = cursors.decode(text.strip())
        except cursors.CursorError as error:
            cursor_error = str(error)
    return StreamRequest(
        series=series,
        resolution=resolution,
        window_ms=window_ms,
        fmt=FORMATS[FORMATS.index(fmt)],
        cursor=cursor,
        cursor_error=cursor_error,
        max_points=max_points,
        reduced=reduced,
    )
