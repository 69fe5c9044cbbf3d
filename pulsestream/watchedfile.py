"""A file re-read by content, for settings and secrets mounted from Kubernetes.

Kubernetes updates a mounted ConfigMap or Secret by swapping a ``..data``
symlink to a new directory, editors and ``kubectl cp`` replace files by
rename, and docker-compose bind mounts are edited in place. Inotify misses
some of these (a watch on the old inode sees nothing), so readers poll: read
the file through its path (following symlinks) and compare the content's
hash with the last one seen. Reading a few hundred bytes a second costs
nothing and works the same on every platform.

Used by :mod:`pulsestream.settingsfile` (live settings) and the streamer's API
key file; each decides what a changed content means. A file larger than the
reader's bound is refused before it is read: a ConfigMap or Secret holds at
most 1 MiB, so anything bigger is a mistake, and reading and parsing it would
stall the service that polls it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["FileTooLarge", "WatchedFile"]

#: Kubernetes stores a ConfigMap or Secret in one etcd object of at most 1 MiB.
MAX_BYTES = 1024 * 1024


class FileTooLarge(OSError):
    """The file is larger than its reader accepts; ``str()`` says both sizes."""


class WatchedFile:
    """Tells whether a file's content changed since it was last read."""

    def __init__(self, path: str | Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._digest: bytes | None = None

    def read_if_changed(self) -> bytes | None:
        """The file's content if it differs from the last content returned, else ``None``.

        Raises ``OSError`` when the file cannot be read, :class:`FileTooLarge` (an
        ``OSError``) when it holds more than ``max_bytes``; the next readable content then
        counts as changed, whatever it was before.
        """
        try:
            with self.path.open("rb") as file:
                raw = file.read(self.max_bytes + 1)  # never more than the bound, even if the file grows meanwhile
        except OSError:
            self._digest = None
            raise
        if len(raw) > self.max_bytes:
            self._digest = None
            size = self.path.stat().st_size if self.path.exists() else len(raw)
            raise FileTooLarge(f"{self.path} is {size:,} bytes; at most {self.max_bytes:,} are read")
        digest = hashlib.sha256(raw).digest()
        if digest == self._digest:
            return None
        self._digest = digest
        return raw
