"""SSE event ids: opaque, versioned, compact cursors that any streamer replica can resume from.

A cursor says, for one stream, the resolution and the last sequence delivered
*per series* (series on different upstream subscriptions can be at different
ticks). Sequences are the generator's, identical on every replica, so a
browser that reconnects to another pod, or to a restarted one, resumes from
its cursor alone; nothing is kept per client on the server.

Layout, then base64url without padding::

    version 1 (1 byte) | resolution index (1) | count (varint)
    | per series, sorted by name: name length (varint) | name | base - seq (varint)
    | base = the highest sequence (varint) | CRC-32 of all of the above (4 bytes, big endian)

Storing each sequence as its distance below the highest keeps ids short (the
sequences of one tick are equal, so most distances are one byte). The CRC
Version 2 is the same with the bucket width in milliseconds (varint) in
place of the resolution index: the cursor of a view the streamer builds
(``maxPoints``, a degraded client; see :mod:`~pulsestream_streamer.core.ladder`).
Streams at the generator's own resolutions keep writing version 1.

catches truncated or hand-edited ids: :func:`decode` raises
:class:`CursorError` for anything it cannot vouch for, and the stream then
starts over with a ``"reset": true`` snapshot rather than guessing.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from pulsestream.spec import RESOLUTIONS
from pulsestream_streamer.core.ladder import GENERATOR_WIDTHS, LADDER_MS, width_name

__all__ = ["Cursor", "CursorError", "decode", "encode"]

VERSION = 1
VERSION_WIDTH = 2
_RESOLUTIONS = tuple(RESOLUTIONS)  # index on the wire; append only
#: Width of every view name a cursor may carry: the generator's resolutions and the ladder.
WIDTHS: dict[str, int] = {width_name(width): width for width in LADDER_MS} | GENERATOR_WIDTHS
_MAX_LEN = 4096


class CursorError(ValueError):
    """The id is not a cursor this streamer can read (garbage, truncated, other version)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """A decoded cursor: view (resolution) name and the last delivered sequence per series (0 = none yet)."""

    resolution: str
    positions: Mapping[str, int]

    @property
    def bucket_ms(self) -> int:
        """Width of the cursor's buckets in milliseconds (0 = raw)."""
        return WIDTHS[self.resolution]


def _varint(value: int, out: bytearray) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise CursorError("truncated cursor")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def encode(resolution: str, positions: Mapping[str, int]) -> str:
    """The id for a stream of view ``resolution`` at ``positions`` (series name -> last delivered sequence)."""
    if resolution in RESOLUTIONS:
        out = bytearray((VERSION, _RESOLUTIONS.index(resolution)))
    else:
        out = bytearray((VERSION_WIDTH,))
        _varint(WIDTHS[resolution], out)
    base = max(positions.values(), default=0)
    _varint(len(positions), out)
    for name in sorted(positions):
        raw = name.encode()
        _varint(len(raw), out)
        out += raw
        _varint(base - positions[name], out)
    _varint(base, out)
    out += zlib.crc32(out).to_bytes(4, "big")
    return base64.urlsafe_b64encode(bytes(out)).rstrip(b"=").decode("ascii")


def decode(text: str) -> Cursor:
    """Read an id produced by :func:`encode`; raise :class:`CursorError` for anything else."""
    body = _checked_body(text)
    resolution, pos = _read_resolution(body)
    return Cursor(resolution, _read_positions(body, pos))


def _checked_body(text: str) -> bytes:
    """The cursor's bytes without their checksum, once the checksum matches."""
    if not text or len(text) > _MAX_LEN:
        raise CursorError("empty or oversized cursor")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise CursorError("cursor is not base64url") from error
    if len(data) < 7:
        raise CursorError("truncated cursor")
    body, check = data[:-4], data[-4:]
    if zlib.crc32(body).to_bytes(4, "big") != check:
        raise CursorError("cursor checksum mismatch")
    return body


def _read_resolution(body: bytes) -> tuple[str, int]:
    """The view a cursor is for (a served resolution, or a built width), and where its series start."""
    if body[0] == VERSION:
        if body[1] >= len(_RESOLUTIONS):
            raise CursorError("unknown resolution in cursor")
        return _RESOLUTIONS[body[1]], 2
    if body[0] == VERSION_WIDTH:
        width, pos = _read_varint(body, 1)
        resolution = width_name(width)
        if WIDTHS.get(resolution) != width or resolution in RESOLUTIONS:
            raise CursorError("unknown bucket width in cursor")
        return resolution, pos
    raise CursorError(f"cursor version {body[0]} is not supported")


def _read_positions(body: bytes, pos: int) -> dict[str, int]:
    """Series name -> last delivered sequence, from ``pos`` to the end of ``body``."""
    count, pos = _read_varint(body, pos)
    if count > 256:
        raise CursorError("too many series in cursor")
    distances: dict[str, int] = {}
    for _ in range(count):
        length, pos = _read_varint(body, pos)
        name_bytes = body[pos : pos + length]
        if len(name_bytes) != length:
            raise CursorError("truncated cursor")
        pos += length
        distance, pos = _read_varint(body, pos)
        try:
            distances[name_bytes.decode()] = distance
        except UnicodeDecodeError as error:
            raise CursorError("series name in cursor is not UTF-8") from error
    base, pos = _read_varint(body, pos)
    if pos != len(body):
        raise CursorError("trailing bytes in cursor")
    if any(distance > base for distance in distances.values()):
        raise CursorError("inconsistent cursor")
    return {name: base - distance for name, distance in distances.items()}
