"""A watched file reports new content once, and an unreadable spell makes the next content new."""

from pathlib import Path

import pytest

from pulsestream.watchedfile import WatchedFile


def test_content_is_reported_once_until_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("a\n")
    watched = WatchedFile(path)
    assert watched.read_if_changed() == b"a\n"
    assert watched.read_if_changed() is None
    path.write_text("b\n")
    assert watched.read_if_changed() == b"b\n"


def test_after_an_unreadable_spell_the_same_content_counts_as_changed(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("a\n")
    watched = WatchedFile(path)
    assert watched.read_if_changed() == b"a\n"
    path.unlink()
    with pytest.raises(OSError):
        watched.read_if_changed()
    path.write_text("a\n")
    assert watched.read_if_changed() == b"a\n"
