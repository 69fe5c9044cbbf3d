"""A file re-read by content, for settings and secrets mounted from Kubernetes.

Kubernetes updates a mounted ConfigMap or Secret by swapping a ``..data``
symlink to a new directory, editors and ``kubectl cp`` replace files by
rename, and docker-compose bind mounts are edited in place. Inotify misses
some of these (a watch on the old inode sees nothing), so readers poll: read
the file through its path (following symlinks) and compare the content's
hash with the last one seen. Reading a few hundred bytes a second costs
nothing and works the same on every platform.

Used by :mod:`pulsestream.settingsfile` (live settings) and the streamer's API
key file; each decides what a changed content means.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["WatchedFile"]


class WatchedFile:
    """Tells whether a file's content changed since it was last read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._digest: bytes | None = None

    def read_if_changed(self) -> bytes | None:
        """The file's content if it differs from the last content returned, else ``None``.

        Raises ``OSError`` when the file cannot be read; the next readable
        content then counts as changed, whatever it was before.
        """
        try:
            raw = self.path.read_bytes()
        except OSError:
            self._digest = None
            raise
        digest = hashlib.sha256(raw).digest()
        if digest == self._digest:
            return None
        self._digest = digest
        return raw
