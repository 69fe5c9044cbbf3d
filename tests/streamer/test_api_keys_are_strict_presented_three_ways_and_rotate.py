"""API keys: parsed strictly, presented three ways, compared against every key, rotated from a watched file."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from pathlib import Path

import pytest
from pulsestream_streamer.access.keys import OPEN_MODE_WARNING, InvalidKeyError, KeyStore, parse_keys, presented_key


class CaseInsensitive(dict[str, str]):
    """A header mapping that looks names up case-insensitively, as Starlette's does."""

    def __init__(self, items: dict[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in items.items()})

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)


def test_env_keys_are_split_on_commas_and_blanks_dropped() -> None:
    assert parse_keys(" alpha-1 ,, beta_2=,", ",") == ["alpha-1", "beta_2="]


def test_key_file_lines_skip_comments_and_blank_lines() -> None:
    assert parse_keys("# rotated 2026-11\nalpha\n\n  beta  \n") == ["alpha", "beta"]


def test_a_key_a_bearer_header_cannot_carry_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidKeyError) as caught:
        parse_keys("good,bad key,also-good", ",")
    assert "bad key" not in str(caught.value) and "#2" in str(caught.value)


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ({"Authorization": "Bearer s3cret"}, {}, "s3cret"),
        ({"authorization": "bearer   s3cret "}, {}, "s3cret"),
        ({"X-API-Key": "s3cret"}, {}, "s3cret"),
        ({}, {"api_key": "s3cret"}, "s3cret"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, {}, None),
        ({"Authorization": "Bearer "}, {"api_key": "fallback"}, "fallback"),
        ({}, {}, None),
    ],
)
def test_a_key_is_taken_from_bearer_then_header_then_query(
    headers: dict[str, str], query: dict[str, str], expected: str | None
) -> None:
    assert presented_key(CaseInsensitive(headers), query) == expected


def test_without_any_key_source_the_store_is_open_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    store = KeyStore()
    assert store.open and store.accepts(None) and store.accepts("anything")
    with caplog.at_level(logging.INFO):
        store.log_mode()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [OPEN_MODE_WARNING]


def test_env_keys_accept_only_themselves(caplog: pytest.LogCaptureFixture) -> None:
    store = KeyStore(["alpha", "beta"])
    assert not store.open
    assert store.accepts("alpha") and store.accepts("beta")
    assert (
        not store.accepts(None) and not store.accepts("") and not store.accepts("alph") and not store.accepts("alphaa")
    )
    with caplog.at_level(logging.INFO):
        store.log_mode()
    assert "alpha" not in caplog.text and "beta" not in caplog.text


def test_every_key_is_compared_even_after_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", counting)
    store = KeyStore(["k1", "k2", "k3", "k4"])
    assert store.accepts("k1")
    assert len(calls) == 4
    calls.clear()
    assert not store.accepts("nope")
    assert len(calls) == 4


def test_a_configured_but_missing_key_file_fails_closed(tmp_path: Path) -> None:
    store = KeyStore(key_file=tmp_path / "absent")
    assert not store.open
    assert not store.accepts("anything") and not store.accepts(None)
    assert store.error is not None and "cannot read" in store.error


def test_the_key_file_rotates_keys_and_env_keys_stay(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("old-key\n")
    store = KeyStore(["env-key"], key_file=path)
    assert store.accepts("old-key") and store.accepts("env-key")
    path.write_text("new-key\n")
    assert store.reload() is True
    assert store.accepts("new-key") and not store.accepts("old-key") and store.accepts("env-key")
    assert store.reload() is False  # same content: nothing to do


def test_an_invalid_key_file_keeps_the_last_good_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("good\n")
    store = KeyStore(key_file=path)
    path.write_text("not a token\n")
    assert store.reload() is False
    assert store.accepts("good") and store.error is not None and "not a token" not in store.error


def test_an_emptied_key_file_revokes_its_keys_and_stays_closed(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("good\n")
    store = KeyStore(key_file=path)
    path.write_text("")
    assert store.reload() is True
    assert not store.accepts("good") and not store.accepts(None) and store.error is not None


def test_the_kubernetes_secret_symlink_swap_rotates_keys(tmp_path: Path) -> None:
    for version, key in (("..v1", "first"), ("..v2", "second")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "api-keys").write_text(key + "\n")
    os.symlink("..v1", tmp_path / "..data")
    os.symlink("..data/api-keys", tmp_path / "api-keys")
    store = KeyStore(key_file=tmp_path / "api-keys")
    assert store.accepts("first")
    os.symlink("..v2", tmp_path / "..data_tmp")
    os.rename(tmp_path / "..data_tmp", tmp_path / "..data")
    assert store.reload() is True
    assert store.accepts("second") and not store.accepts("first")


async def test_changes_polls_the_file_until_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("one\n")
    store = KeyStore(key_file=path, poll_interval=0.01)
    seen: list[int] = []

    async def watch() -> None:
        async for count in store.changes():
            seen.append(count)

    task = asyncio.create_task(watch())
    path.write_text("one\ntwo\n")
    async with asyncio.timeout(5):
        while not seen:
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [2] and store.accepts("two")
