"""Watching the live settings file (``PULSESTREAM_SETTINGS_FILE``).

Every ``poll_interval`` the file is re-read by content
(:class:`~pulsestream.watchedfile.WatchedFile`: follows the ConfigMap symlink
swap, renames and in-place edits alike).

Guarantees:

- :attr:`SettingsFile.current` is always a complete, valid spec: ``base``
  (the service's settings from its environment) until a good file is read,
  then the last good file laid over ``base`` (keys the file leaves out keep
  their ``base`` value). A file that is missing,
  unreadable or invalid is rejected as a whole; :attr:`SettingsFile.error`
  says why (and is ``None`` again once a good file is read).
- :meth:`SettingsFile.changes` yields each new valid spec once, in order,
  reading and parsing the file in a worker thread, so a large file never
  stalls the event loop (``/health``, gRPC health) while it is parsed; a file
  over 1 MiB (a ConfigMap's limit) is refused without being read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from pulsestream.spec import SpecError, StreamSpec, load_spec
from pulsestream.watchedfile import FileTooLarge, WatchedFile

logger = logging.getLogger(__name__)


class SettingsFile:
    """The live settings in force, read from an optional file and kept current."""

    def __init__(self, path: str | Path | None, poll_interval: float = 1.0, base: StreamSpec | None = None) -> None:
        self.path = Path(path) if path else None
        self._file = WatchedFile(self.path) if self.path else None
        self.poll_interval = poll_interval
        self.base = base or StreamSpec()
        self._current = self.base
        self._error: str | None = None
        self.reload()

    @property
    def current(self) -> StreamSpec:
        """The settings in force: the last good file over ``base``, or ``base``."""
        return self._current

    @property
    def error(self) -> str | None:
        """Why the file was last rejected, or ``None`` if the file in force is good."""
        return self._error

    @property
    def version(self) -> str:
        """Hash of the settings in force (``/health`` shows it)."""
        return self._current.version()

    def reload(self) -> bool:
        """Read the file now; return ``True`` if the settings in force changed."""
        if self._file is None:
            return False
        try:
            raw = self._file.read_if_changed()
        except FileTooLarge as error:
            return self._reject(f"settings file too large: {error}")
        except OSError as error:
            return self._reject(f"cannot read {self.path}: {error.strerror or error}")
        if raw is None:
            return False
        try:
            spec = load_spec(raw, base=self.base)
        except SpecError as error:
            return self._reject(f"invalid settings in {self.path}: {error}")
        self._error = None
        if spec == self._current:
            return False
        logger.info(
            "settings applied",
            extra={"path": str(self.path), "version": spec.version(), "previous": self._current.version()},
        )
        self._current = spec
        return True

    def _reject(self, message: str) -> bool:
        if message != self._error:
            logger.error("settings rejected, keeping version %s: %s", self._current.version(), message)
        self._error = message
        return False

    async def changes(self) -> AsyncIterator[StreamSpec]:
        """Yield every new valid spec as it appears, until cancelled."""
        if self.path is None:
            await asyncio.Event().wait()  # nothing to watch; park until cancelled
        while True:
            await asyncio.sleep(self.poll_interval)
            if await asyncio.to_thread(self.reload):
                yield self._current
