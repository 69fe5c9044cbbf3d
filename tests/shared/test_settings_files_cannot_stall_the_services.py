"""A settings file cannot stall the services: too large is refused unread, and reading happens off the event loop.

A 3.5 MB file once stalled the streamer's /health for 19 s and the generator's gRPC health for 14 s: it
was read and parsed on the event loop at every change. A ConfigMap holds at most 1 MiB, so anything
larger is refused before it is read, and what is read is read in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from pulsestream.settingsfile import SettingsFile
from pulsestream.spec import StreamSpec
from pulsestream.watchedfile import FileTooLarge, WatchedFile


def test_a_file_over_the_bound_is_refused_without_being_read_in_full(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_bytes(b"# padding\n" * 350_000)  # 3.5 MB
    watched = WatchedFile(path, max_bytes=1024 * 1024)
    with pytest.raises(FileTooLarge, match=r"3,500,000 bytes; at most 1,048,576"):
        watched.read_if_changed()
    path.write_text("frequency: 1s\n")
    assert watched.read_if_changed() == b"frequency: 1s\n"


def test_an_oversized_settings_file_is_rejected_and_the_last_good_settings_stay(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("frequency: 250ms\n")
    settings = SettingsFile(path)
    assert str(settings.current.frequency) == "250ms"
    path.write_bytes(b"frequency: 1s\n" + b"# padding\n" * 350_000)
    assert settings.reload() is False
    assert settings.error is not None and "too large" in settings.error and "1,048,576" in settings.error
    assert str(settings.current.frequency) == "250ms"


async def test_the_file_is_read_off_the_event_loop(tmp_path: Path) -> None:
    """Reading blocks on a FIFO until a writer comes: the loop must keep running meanwhile."""
    path = tmp_path / "settings.yaml"
    path.write_text("{}\n")
    settings = SettingsFile(path, poll_interval=0.02, base=StreamSpec())
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    fifo = tmp_path / "settings.fifo"
    os.mkfifo(fifo)
    seen_by_writer: list[int] = []

    def write_later() -> None:
        installed = ticks
        time.sleep(0.5)
        seen_by_writer.append(ticks - installed)  # how far the loop got while the reader was blocked
        with path.open("w") as writer:  # the FIFO now: blocks until the reader has the other end
            writer.write("frequency: 2s\n")

    ticker = asyncio.create_task(tick())
    changes = settings.changes()
    try:
        next_change = asyncio.ensure_future(anext(changes))
        await asyncio.sleep(0.05)
        fifo.rename(path)  # the next poll opens the FIFO and blocks in read()
        writer = threading.Thread(target=write_later, daemon=True)
        writer.start()
        spec = await asyncio.wait_for(next_change, 10)
        writer.join(5)
    finally:
        ticker.cancel()
        await changes.aclose()
    assert str(spec.frequency) == "2s"
    assert seen_by_writer and seen_by_writer[0] >= 10, f"the event loop ran {seen_by_writer} ticks during the read"
