"""The operator's pure parts: reasons of the spec's cross-field rules, conditions, rendering, settings, kopf flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pulsestream_operator import conditions, rendering
from pulsestream_operator.running import kopf_arguments
from pulsestream_operator.settings import OperatorSettings

from pulsestream.envsettings import SettingsError
from pulsestream.settingsfile import SettingsFile
from pulsestream.spec import SpecError, StreamSpec, load_spec, parse_spec
from pulsestream.specrules import broken


def reasons(document: dict[str, Any]) -> list[str]:
    """The reasons the operator gives for ``document``: those of the spec's rules it breaks (none when valid)."""
    try:
        parse_spec(document)
    except SpecError as error:
        return [problem.reason for problem in error.problems]
    return []


def test_the_default_spec_passes_every_check() -> None:
    assert broken(StreamSpec()) == []


@pytest.mark.parametrize(
    "document,reason",
    [
        ({"rateLimit": {"requestsPerSecond": 20, "burst": 10}}, "BurstBelowRate"),
        ({"frequency": "2m", "retention": "1h"}, "FrequencyTooSlow"),
        ({"flushInterval": "5s", "heartbeatInterval": "5s"}, "FlushNotBelowHeartbeat"),
        ({"frequency": "30s", "retention": "10s"}, "RetentionBelowFrequency"),
        ({"frequency": "10ms", "retention": "24h"}, "HistoryTooLarge"),
    ],
)
def test_each_cross_field_rule_names_its_reason(document: dict[str, Any], reason: str) -> None:
    assert reasons(document) == [reason]


def test_values_on_the_boundary_pass() -> None:
    assert reasons({"rateLimit": {"requestsPerSecond": 10, "burst": 10}, "frequency": "1m", "retention": "1m"}) == []
    assert reasons({"frequency": "100ms", "retention": "24h"}) == []  # 864,000 points


def test_every_broken_rule_is_reported_at_once() -> None:
    document = {"rateLimit": {"requestsPerSecond": 20, "burst": 1}, "flushInterval": "10s", "heartbeatInterval": "1s"}
    assert reasons(document) == ["BurstBelowRate", "FlushNotBelowHeartbeat"]


def test_a_condition_keeps_its_transition_time_until_its_status_flips() -> None:
    first = conditions.merge(
        None, type_="Ready", status=True, reason="Applied", message="a", generation=1, at="2026-01-01T00:00:00Z"
    )
    assert first == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Applied",
            "message": "a",
            "observedGeneration": 1,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ]
    same = conditions.merge(
        first, type_="Ready", status=True, reason="Applied", message="b", generation=2, at="2026-01-02T00:00:00Z"
    )
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert (same[0]["message"], same[0]["observedGeneration"]) == ("b", 2)
    flipped = conditions.merge(
        same, type_="Ready", status=False, reason="Bad", message="c", generation=3, at="2026-01-03T00:00:00Z"
    )
    assert (flipped[0]["status"], flipped[0]["lastTransitionTime"]) == ("False", "2026-01-03T00:00:00Z")


def test_other_conditions_are_left_in_place() -> None:
    others = [{"type": "Progressing", "status": "True"}]
    merged = conditions.merge(others, type_="Ready", status=True, reason="A", message="m", generation=None, at="t")
    assert merged[0] == others[0] and merged[1]["type"] == "Ready" and "observedGeneration" not in merged[1]
    assert conditions.find(merged, "Ready") == merged[1]
    assert conditions.find(merged, "Missing") is None


def test_the_settings_file_keeps_values_as_written_and_lists_every_field() -> None:
    raw = {"frequency": "250ms", "rateLimit": {"requestsPerSecond": 5, "burst": 12}, "retention": "1m30s"}
    spec = parse_spec(raw)
    text = rendering.settings_file(rendering.as_written(spec, raw), "ns/name")
    assert text.startswith("# Written by pulsestream-operator from StreamConfig ns/name.\n")
    document = yaml.safe_load(text)
    assert list(document) == list(StreamSpec().to_document())  # every field, in the model's order
    assert document["frequency"] == "250ms" and document["retention"] == "1m30s"
    assert document["rateLimit"] == {"requestsPerSecond": 5, "burst": 12, "maxStreamsPerClient": 4}
    assert isinstance(document["rateLimit"]["requestsPerSecond"], int)
    assert load_spec(text) == spec


def test_the_services_reading_the_file_report_the_operators_settings_hash(tmp_path: Path) -> None:
    """End to end without a cluster: the ConfigMap's file, mounted where a service watches, over its env settings."""
    raw = {"frequency": "250ms", "series": ["cpu"], "rateLimit": {"requestsPerSecond": 2, "burst": 3}, "target": "t"}
    spec = parse_spec(raw)
    body = rendering.configmap(
        name="t-settings",
        namespace="ns",
        key="settings.yaml",
        text=rendering.settings_file(rendering.as_written(spec, raw), "ns/demo"),
        version=spec.version(),
        streamconfig="demo",
    )
    path = tmp_path / "settings.yaml"
    path.write_text(body["data"]["settings.yaml"])
    service_env = parse_spec({"frequency": "1s", "bufferSize": 7, "series": ["memory"]})  # the service's own base

    watched = SettingsFile(path, poll_interval=0.05, base=service_env)

    assert watched.error is None
    assert watched.current == spec  # every field from the file; nothing leaks from the environment
    assert watched.version == spec.version() == body["metadata"]["annotations"]["pulsestream.io/settings-hash"]
    assert watched.current.frequency.millis == 250
    assert watched.current.rate_limit.requests_per_second == 2


def test_the_configmap_patch_is_none_when_nothing_differs_and_minimal_otherwise() -> None:
    desired = rendering.configmap(name="c", namespace="n", key="k", text="a: 1\n", version="v1", streamconfig="s")
    desired["metadata"]["ownerReferences"] = [{"uid": "u1", "controller": True}]
    assert rendering.configmap_patch(desired, desired) is None
    existing: dict[str, Any] = {
        "metadata": {"labels": {"other": "x"}, "ownerReferences": [{"uid": "u0"}]},
        "data": {"k": "old", "extra": "kept"},
    }
    patch = rendering.configmap_patch(existing, desired)
    assert patch is not None
    assert patch["data"] == {"k": "a: 1\n"}
    assert patch["metadata"]["ownerReferences"] == [{"uid": "u0"}, {"uid": "u1", "controller": True}]
    assert "other" not in patch["metadata"]["labels"]
    assert rendering.controller_uid(desired) == "u1"


def test_changed_fields_compare_top_level_settings() -> None:
    before = StreamSpec().to_document()
    after = dict(before, frequency="1s")
    assert rendering.changed_fields(before, after) == {"frequency": ("100ms", "1s")}
    assert set(rendering.changed_fields(None, after)) == set(after)
    assert rendering.read_settings("not: [valid") is None
    assert rendering.read_settings(None) is None


def test_operator_settings_have_documented_defaults() -> None:
    settings = OperatorSettings.from_env({})
    assert settings.namespace_list == []
    assert settings.configmap_for("demo", None) == "demo-settings"
    assert settings.configmap_for("demo", "pulsestream") == "pulsestream-settings"
    for variable, _default, description in OperatorSettings.documented_fields():
        assert description, variable
    names = {row[0] for row in OperatorSettings.documented_fields()}
    assert {"OPERATOR_NAMESPACES", "OPERATOR_LIVENESS_PORT", "LOG_LEVEL", "LOG_FORMAT"} <= names


@pytest.mark.parametrize(
    "env",
    [
        {"OPERATOR_CONFIGMAP_NAME": "{release}-x"},
        {"OPERATOR_CONFIGMAP_NAME": "Upper-{target}"},
        {"OPERATOR_ROLL_ON": "frequency,colour"},
        {"OPERATOR_LIVENESS_PORT": "70000"},
        {"OPERATOR_SETTINGS_KEY": "a/b"},
    ],
)
def test_bad_operator_settings_name_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=next(iter(env))):
        OperatorSettings.from_env(env)


def test_kopf_runs_cluster_wide_standalone_by_default_and_as_configured_otherwise() -> None:
    assert kopf_arguments(OperatorSettings.from_env({})) == {
        "clusterwide": True,
        "namespaces": [],
        "standalone": True,
        "peering_name": None,
        "liveness_endpoint": "http://0.0.0.0:8081/healthz",
    }
    custom = OperatorSettings.from_env(
        {"OPERATOR_NAMESPACES": "a, b", "OPERATOR_PEERING_NAME": "pulsestream", "OPERATOR_LIVENESS_PORT": "0"}
    )
    assert kopf_arguments(custom) == {
        "clusterwide": False,
        "namespaces": ["a", "b"],
        "standalone": False,
        "peering_name": "pulsestream",
        "liveness_endpoint": None,
    }
