"""The settings file watcher keeps the last good settings and follows every kind of update."""

import asyncio
import os
from pathlib import Path

from pulsestream.settingsfile import SettingsFile
from pulsestream.spec import StreamSpec


def test_without_a_file_the_defaults_are_in_force() -> None:
    settings = SettingsFile(None)
    assert settings.current == StreamSpec()
    assert settings.error is None


def test_a_good_file_is_read_at_start(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("frequency: 250ms\n")
    settings = SettingsFile(path)
    assert settings.current.frequency == "250ms"
    assert settings.error is None


def test_an_invalid_file_keeps_the_last_good_settings_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("frequency: 250ms\n")
    settings = SettingsFile(path)
    good = settings.version
    path.write_text("frequency: 1ms\n")
    assert settings.reload() is False
    assert settings.version == good
    assert settings.error is not None and "frequency" in settings.error
    path.write_text("frequency: 2s\n")
    assert settings.reload() is True
    assert settings.error is None
    assert settings.current.frequency.seconds == 2


def test_a_deleted_file_keeps_the_last_good_settings(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("bufferSize: 7\n")
    settings = SettingsFile(path)
    path.unlink()
    assert settings.reload() is False
    assert settings.current.buffer_size == 7
    assert settings.error is not None and "cannot read" in settings.error


def test_the_kubernetes_symlink_swap_is_followed(tmp_path: Path) -> None:
    # A ConfigMap volume: settings.yaml -> ..data/settings.yaml, ..data -> ..2026_v1
    for version, buffer in (("..v1", 1), ("..v2", 2)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "settings.yaml").write_text(f"bufferSize: {buffer}\n")
    os.symlink("..v1", tmp_path / "..data")
    os.symlink("..data/settings.yaml", tmp_path / "settings.yaml")
    settings = SettingsFile(tmp_path / "settings.yaml")
    assert settings.current.buffer_size == 1
    os.symlink("..v2", tmp_path / "..data_tmp")
    os.rename(tmp_path / "..data_tmp", tmp_path / "..data")  # the atomic swap kubelet does
    assert settings.reload() is True
    assert settings.current.buffer_size == 2


async def test_changes_yields_each_new_spec_once(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{"bufferSize": 1}')
    settings = SettingsFile(path, poll_interval=0.01)
    seen: list[int] = []

    async def collect() -> None:
        async for spec in settings.changes():
            seen.append(spec.buffer_size)
            if spec.buffer_size == 3:
                return

    task = asyncio.create_task(collect())
    for buffer in (2, 3):
        await asyncio.sleep(0.05)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f'{{"bufferSize": {buffer}}}')
        tmp.replace(path)
        while not seen or seen[-1] != buffer:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(task, 5)
    assert seen == [2, 3]


def test_keys_the_file_leaves_out_keep_the_environment_values(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("rateLimit: {burst: 3}\n")
    base = StreamSpec.model_validate({"frequency": "1s", "rateLimit": {"requestsPerSecond": 2}})
    settings = SettingsFile(path, base=base)
    assert settings.current.frequency == "1s"
    assert settings.current.rate_limit.requests_per_second == 2
    assert settings.current.rate_limit.burst == 3


def test_an_empty_file_keeps_the_last_good_settings_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("bufferSize: 7\n")
    settings = SettingsFile(path)
    good = settings.version
    for empty in ("", "# all commented out\n", "\n\n"):
        path.write_text(empty)
        assert settings.reload() is False
        assert settings.version == good and settings.current.buffer_size == 7
        assert settings.error is not None and "empty" in settings.error
        path.write_text("bufferSize: 7\n")
        settings.reload()
        assert settings.error is None


def test_an_empty_file_at_start_is_an_error_and_the_environment_values_stay(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("")
    base = StreamSpec.model_validate({"bufferSize": 9})
    settings = SettingsFile(path, base=base)
    assert settings.current == base
    assert settings.error is not None and "empty" in settings.error


def test_a_file_breaking_a_cross_field_rule_is_refused_like_an_invalid_value(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("frequency: 1s\n")
    settings = SettingsFile(path)
    good = settings.version
    path.write_text("frequency: 10ms\nretention: 24h\n")  # 8.6 million points per series
    assert settings.reload() is False
    assert settings.version == good
    assert settings.error is not None and "8,640,000 points per series" in settings.error
