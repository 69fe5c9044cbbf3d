"""Live settings through real processes: a frequency change reaches an open SSE stream without a reconnect,
delivered by the Kubernetes ConfigMap symlink swap; an invalid file (a bad value, or values that do not go
together) keeps the old settings and /health says why."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from loopback import wait_for
from services import Generator, Stack, StreamerProcess
from sse import iter_events

pytestmark = pytest.mark.e2e


def _configmap_volume(directory: Path, document: dict[str, Any]) -> Path:
    """Lay out a directory as kubelet mounts a ConfigMap: settings.yaml -> ..data/settings.yaml -> ..v1."""
    directory.mkdir()
    (directory / "..v1").mkdir()
    (directory / "..v1" / "settings.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    os.symlink("..v1", directory / "..data")
    os.symlink("..data/settings.yaml", directory / "settings.yaml")
    return directory / "settings.yaml"


def _swap(directory: Path, version: str, document: dict[str, Any]) -> None:
    """The atomic update kubelet does: a new timestamped directory, then rename a new ..data link over the old."""
    (directory / version).mkdir()
    (directory / version / "settings.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    os.symlink(version, directory / "..data_tmp")
    os.rename(directory / "..data_tmp", directory / "..data")


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("configmap") / "settings"


@pytest.fixture(scope="module")
def generator(module_stack: Stack, volume: Path) -> Generator:
    path = _configmap_volume(volume, {"frequency": "50ms"})
    return module_stack.generator(settings_path=path)


@pytest.fixture(scope="module")
def streamer(module_stack: Stack, generator: Generator) -> StreamerProcess:
    return module_stack.streamer(generator, {"flushInterval": "10ms"})


def _spacings(times: list[int]) -> list[int]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def test_a_frequency_change_reaches_an_open_stream_without_a_reconnect(
    generator: Generator, streamer: StreamerProcess, volume: Path
) -> None:
    times: list[int] = []
    events: list[str] = []
    changed_at: int | None = None
    deadline = time.monotonic() + 30
    with (
        httpx.Client(timeout=httpx.Timeout(10.0)) as client,
        client.stream("GET", streamer.url + "/v1/stream", params={"series": "cpu", "window": "0s"}) as response,
    ):
        assert response.status_code == 200
        for event in iter_events(response):
            assert time.monotonic() < deadline, f"spacing did not change; saw {_spacings(times)[-20:]}"
            events.append(event.event)
            assert event.event != "notice", event.data
            if event.event != "points":
                continue
            times.extend(point["t"] for point in event.data["points"] if point["series"] == "cpu")
            if changed_at is None and len(times) >= 8:
                assert set(_spacings(times[-6:])) == {50}, _spacings(times)
                changed_at = len(times)
                _swap(volume, "..v2", {"frequency": "250ms"})
            if changed_at is not None and len(times) >= changed_at + 4 and _spacings(times[-3:]) == [250, 250]:
                break
    # One connection throughout: one snapshot at its start, no reset, no error.
    assert events.count("snapshot") == 1
    assert generator.alive() and streamer.alive()


@pytest.mark.fault
def test_an_invalid_settings_file_keeps_the_last_good_settings_and_health_shows_why(streamer: StreamerProcess) -> None:
    good = {"flushInterval": "20ms"}
    version = streamer.version_of(good)
    streamer.write_settings(good)
    wait_for(lambda: streamer.health().get("config_version") == version, what="the good settings")

    streamer.write_settings({"flushInterval": "20ms", "rateLimit": {"burst": 0}})
    body = wait_for(lambda: (b := streamer.health()).get("settings_error") and b, what="the error in /health")
    assert "burst" in body["settings_error"]
    assert body["config_version"] == version  # the last good settings stay in force
    assert httpx.get(streamer.url + "/v1/series", timeout=10.0).status_code == 200  # and nothing crashed

    streamer.write_settings(good | {"heartbeatInterval": "5s"})
    fixed = streamer.version_of(good | {"heartbeatInterval": "5s"})
    wait_for(lambda: streamer.health().get("config_version") == fixed, what="the repaired settings")
    assert streamer.health().get("settings_error") is None


@pytest.mark.fault
def test_a_file_breaking_a_cross_field_rule_is_refused_by_both_running_services(
    generator: Generator, streamer: StreamerProcess, volume: Path
) -> None:
    """8.6 million points per series: each value is in range, the pair is not (HistoryTooLarge, as the operator
    says)."""
    good = {"flushInterval": "20ms"}
    version = streamer.version_of(good)
    streamer.write_settings(good)
    wait_for(lambda: streamer.health().get("config_version") == version, what="the good settings")
    too_much_history = {"frequency": "10ms", "retention": "24h"}

    streamer.write_settings(good | too_much_history)
    body = wait_for(lambda: (b := streamer.health()).get("settings_error") and b, what="the error in /health")
    assert "8,640,000 points per series" in body["settings_error"]
    assert body["config_version"] == version  # the last good settings stay in force
    _swap(volume, "..v-history", too_much_history)
    wait_for(lambda: "8,640,000 points per series" in generator.log_text(), what="the generator to refuse the file")
    assert "settings rejected, keeping version" in generator.log_text()
    assert generator.alive() and streamer.alive()
    assert "Traceback" not in generator.log_text() + streamer.log_text()

    _swap(volume, "..v-restored", {"frequency": "250ms"})
    streamer.write_settings(good)
    wait_for(lambda: streamer.health().get("settings_error") is None, what="the repaired settings")


def test_a_streamer_without_keys_says_at_start_up_that_v1_is_open(streamer: StreamerProcess) -> None:
    assert "API keys not configured: /v1 is open" in streamer.log_text()
    assert httpx.get(streamer.url + "/v1/series", timeout=10.0).status_code == 200
