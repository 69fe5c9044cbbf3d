"""A write-ahead journal of published points, so a crashed generator gets back what it acknowledged.

Synthetic history is recomputed at start (a pure function of time);
published points are not: without a journal, a generator that is killed
(``kill -9``, the OOM killer, a container restart) forgets every published
point, including those it acknowledged but had not yet sent to a
subscriber. With ``GENERATOR_INGEST_JOURNAL_DIR`` set, the memory store
writes each batch's stored points to this journal *before* the batch is
acknowledged, and replays the journal at start, so after a crash:

- every acknowledged point is back, with the same sequence, and a streamer
  that resubscribes ``after_sequence`` gets the ones it missed;
- a producer's resend of a batch that was stored but not acknowledged
  counts as duplicates, as it would have without the crash.

Durability: each record is written with one ``write()`` to a file opened
``O_APPEND``, so it is in the kernel's page cache when the batch is
acknowledged: it survives the process dying, not the machine losing power
(there is no ``fsync`` per batch; segments are synced when they are closed
and at shutdown). In Kubernetes an ``emptyDir`` volume survives container
restarts, which is what a crashed generator gets.

Layout: numbered segment files (``segment-00000001.journal``), a new one at
every start and when the current one passes :data:`SEGMENT_BYTES`; a
segment whose newest time is older than the retention (plus a margin) is
deleted. A record is ``magic | version | kind | payload length | CRC-32 of
the payload`` then the payload: for points, per series its name, count,
timestamps (uint64) and values (float64); for seals (buckets the clock
closed, which decide which later points are late), per series its name, the
width index and the new closed-through time. Replay stops at the first
record of a segment that is cut short or fails its CRC (a write the crash
interrupted) and goes on with the next segment.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SEGMENT_BYTES", "Journal", "Replayed"]

logger = logging.getLogger(__name__)

#: A segment is closed (synced) and a new one started past this size.
SEGMENT_BYTES = 64 * 1024 * 1024

_HEADER = struct.Struct("<HBBII")  # magic, version, kind, payload length, CRC-32
_MAGIC = 0x5053  # "PS"
_VERSION = 1
_POINTS, _SEALS = 1, 2
_NAME = struct.Struct("<H")
_COUNT = struct.Struct("<I")
_SEAL = struct.Struct("<Bq")

#: Applies a replayed run of points of one series (name, timestamps, values).
ApplyPoints = Callable[[str, Sequence[int], Sequence[float]], None]
#: Applies a replayed seal (name, width index, closed-through time).
ApplySeal = Callable[[str, int, int], None]


@dataclass
class Replayed:
    """What a replay found."""

    segments: int = 0
    records: int = 0
    points: int = 0
    #: Bytes at the end of segments that could not be read (a write cut short by the crash).
    discarded: int = 0


def _name(data: bytes, at: int) -> tuple[str, int]:
    (length,) = _NAME.unpack_from(data, at)
    at += _NAME.size
    return data[at : at + length].decode(), at + length


class Journal:
    """Segments of records in one directory; written by one generator process at a time."""

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        #: Newest time written to each segment (for pruning by retention).
        self._newest: dict[Path, int] = {}

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob("segment-*.journal"))

    # --- reading ----------------------------------------------------------------------------------

    def replay(self, points: ApplyPoints, seals: ApplySeal) -> Replayed:
        """Apply every record of every segment, oldest first."""
        self.directory.mkdir(parents=True, exist_ok=True)
        found = Replayed()
        for path in self._segments():
            data = path.read_bytes()
            found.segments += 1
            at, newest = 0, 0
            while at + _HEADER.size <= len(data):
                magic, version, kind, length, crc = _HEADER.unpack_from(data, at)
                payload = data[at + _HEADER.size : at + _HEADER.size + length]
                if magic != _MAGIC or version != _VERSION or len(payload) != length or zlib.crc32(payload) != crc:
                    break
                newest = max(newest, self._apply(kind, payload, points, seals, found))
                found.records += 1
                at += _HEADER.size + length
            if at < len(data):
                found.discarded += len(data) - at
                logger.warning("journal %s: %d bytes at its end unreadable (cut short), skipped", path, len(data) - at)
            self._newest[path] = newest
        return found

    @staticmethod
    def _apply(kind: int, payload: bytes, points: ApplyPoints, seals: ApplySeal, found: Replayed) -> int:
        (count,) = _COUNT.unpack_from(payload, 0)
        at, newest = _COUNT.size, 0
        for _ in range(count):
            name, at = _name(payload, at)
            if kind == _POINTS:
                (n,) = _COUNT.unpack_from(payload, at)
                at += _COUNT.size
                times, values = array("Q"), array("d")
                times.frombytes(payload[at : at + 8 * n])
                values.frombytes(payload[at + 8 * n : at + 16 * n])
                at += 16 * n
                if n:
                    points(name, times, values)
                    found.points += n
                    newest = max(newest, times[-1])
            elif kind == _SEALS:
                index, through = _SEAL.unpack_from(payload, at)
                at += _SEAL.size
                seals(name, index, through)
                newest = max(newest, through)
        return newest

    # --- writing ----------------------------------------------------------------------------------

    def open(self) -> None:
        """Start a new segment (never append to one a crash may have cut short)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        segments = self._segments()
        number = int(segments[-1].stem.rpartition("-")[2]) + 1 if segments else 1
        self._path = self.directory / f"segment-{number:08d}.journal"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        self._size = 0
        self._newest[self._path] = 0

    def _write(self, kind: int, payload: bytes, newest: int) -> None:
        if self._fd is None:
            return
        record = _HEADER.pack(_MAGIC, _VERSION, kind, len(payload), zlib.crc32(payload)) + payload
        view = memoryview(record)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(record)
        assert self._path is not None
        self._newest[self._path] = max(self._newest[self._path], newest)
        if self._size >= self.segment_bytes:
            self._close_segment()
            self.open()

    def points(self, runs: Sequence[tuple[str, Sequence[int], Sequence[float]]]) -> None:
        """One record for a batch: the points it stored, per series (timestamps ascending)."""
        parts = [_COUNT.pack(len(runs))]
        newest = 0
        for name, times, values in runs:
            raw = name.encode()
            parts += [_NAME.pack(len(raw)), raw, _COUNT.pack(len(times))]
            parts += [array("Q", times).tobytes(), array("d", values).tobytes()]
            if times:
                newest = max(newest, times[-1])
        self._write(_POINTS, b"".join(parts), newest)

    def seals(self, closed: Iterable[tuple[str, int, int]]) -> None:
        """One record for buckets the clock closed: (series, width index, closed-through time)."""
        entries = list(closed)
        if not entries:
            return
        parts = [_COUNT.pack(len(entries))]
        for name, index, through in entries:
            raw = name.encode()
            parts += [_NAME.pack(len(raw)), raw, _SEAL.pack(index, through)]
        self._write(_SEALS, b"".join(parts), max(through for _, _, through in entries))

    def prune(self, keep_from: int) -> None:
        """Delete closed segments holding nothing newer than ``keep_from`` (epoch ms)."""
        for path, newest in list(self._newest.items()):
            if path != self._path and newest < keep_from:
                path.unlink(missing_ok=True)
                del self._newest[path]

    def _close_segment(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Sync and close the segment being written."""
        self._close_segment()
