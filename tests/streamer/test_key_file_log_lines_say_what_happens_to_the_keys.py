"""What the key file's log lines say matches what happens to the keys (issue 18, item 14)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pulsestream_streamer.access.keys import KeyStore


def test_emptying_the_key_file_says_the_keys_are_revoked_not_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys"
    path.write_text("good\n")
    store = KeyStore(key_file=path)
    path.write_text("")
    with caplog.at_level(logging.INFO, logger="pulsestream_streamer.access.keys"):
        assert store.reload() is True
    messages = [record.getMessage() for record in caplog.records]
    assert not any("keeping" in message for message in messages), messages
    assert any("revoked" in message for message in messages), messages
    assert not store.accepts("good")


def test_a_key_file_over_a_secrets_size_is_refused_and_the_keys_stay(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("good\n")
    store = KeyStore(key_file=path)
    path.write_text("# padding\n" * 200_000)
    assert store.reload() is False
    assert store.accepts("good")
    assert store.error is not None and "bytes; at most" in store.error


def test_the_invalid_key_message_reads_the_same_after_log_redaction(tmp_path: Path) -> None:
    from pulsestream_streamer.access.keys import InvalidKeyError, parse_keys
    from pulsestream_streamer.access.redaction import redact

    with pytest.raises(InvalidKeyError) as refused:
        parse_keys("good\nnot a key\n")
    message = str(refused.value)
    assert "key #2" in message
    assert redact(message, ("good",)) == message, "the redaction filter must not rewrite our own explanation"
