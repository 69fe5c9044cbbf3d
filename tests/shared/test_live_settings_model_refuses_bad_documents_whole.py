"""The live settings model: durations keep their text, bad documents (empty ones too) are rejected whole, and
the cross-field rules are the model's own."""

import re

import pytest
from pydantic import ValidationError

from pulsestream.durations import Duration, format_seconds, parse_seconds
from pulsestream.spec import INVALID_SPEC, SpecError, StreamSpec, field_at, load_spec
from pulsestream.specrules import RULES


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10ms", 0.01), ("250ms", 0.25), ("15s", 15), ("10m", 600), ("1h", 3600), ("1m30s", 90), ("1.5s", 1.5)],
)
def test_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "ms", "-1s", "1d", "1 s", "abc"])
def test_malformed_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        Duration(text)


def test_seconds_format_back_in_the_shortest_exact_unit() -> None:
    assert [format_seconds(s) for s in (0.25, 15, 600, 3600, 0.01, 90)] == [
        "250ms",
        "15s",
        "10m",
        "1h",
        "10ms",
        "90s",
    ]


def test_a_spec_renders_durations_exactly_as_written() -> None:
    spec = load_spec("frequency: 250ms\nretention: 1m30s\n")
    document = spec.to_document()
    assert document["frequency"] == "250ms"
    assert document["retention"] == "1m30s"
    assert spec.frequency.seconds == 0.25


def test_defaults_match_the_design() -> None:
    assert load_spec("{}").to_document() == {
        "frequency": "100ms",
        "bufferSize": 1024,
        "flushInterval": "50ms",
        "heartbeatInterval": "15s",
        "retention": "10m",
        "series": ["cpu", "memory", "requests", "latency"],
        "rateLimit": {"requestsPerSecond": 5.0, "burst": 10, "maxStreamsPerClient": 4},
    }


def test_json_and_yaml_documents_give_the_same_spec() -> None:
    # burst 30: at least the default rate of 5 per second, as the BurstBelowRate rule wants
    as_json = load_spec('{"frequency": "1s", "rateLimit": {"burst": 30}}')
    as_yaml = load_spec("frequency: 1s\nrateLimit:\n  burst: 30\n")
    assert as_json == as_yaml
    assert as_json.version() == as_yaml.version()


def test_version_changes_with_any_value() -> None:
    assert load_spec("bufferSize: 10").version() != load_spec("bufferSize: 11").version()


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ("frequency: 5ms", "frequency: .*out of range"),
        ("frequency: 2h", "frequency: .*out of range"),
        ("bufferSize: 0", "bufferSize"),
        ("series: []", "series"),
        ("series: [cpu, cpu]", "repeated: cpu"),
        ("series: [9cpu]", "series.0"),
        ("series: ['cpu,memory']", "series.0"),
        ("rateLimit: {burst: 0}", "rateLimit.burst"),
        ("unknownField: 1", "unknownField"),
        ("- a list", "mapping"),
        ("frequency: [unclosed", "not valid YAML"),
    ],
)
def test_invalid_documents_are_rejected_with_the_field_named(document: str, complaint: str) -> None:
    with pytest.raises(SpecError, match=complaint):
        load_spec(document)


@pytest.mark.parametrize("text", ["", "   \n", "# every key commented out\n# frequency: 1s\n", "---\n", "null"])
def test_an_empty_document_is_refused_as_a_truncated_write_not_taken_for_all_defaults(text: str) -> None:
    with pytest.raises(SpecError, match="empty") as caught:
        load_spec(text)
    assert caught.value.reason == INVALID_SPEC
    with pytest.raises(SpecError, match="empty"):
        load_spec(text, base=StreamSpec())


def test_an_empty_mapping_asks_for_the_defaults() -> None:
    assert load_spec("{}") == StreamSpec()
    base = StreamSpec.model_validate({"bufferSize": 7})
    assert load_spec("{}", base=base) == base


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ("rateLimit: {requestsPerSecond: 20, burst: 10}", "BurstBelowRate"),
        ("frequency: 2m\nretention: 1h", "FrequencyTooSlow"),
        ("flushInterval: 5s\nheartbeatInterval: 5s", "FlushNotBelowHeartbeat"),
        ("frequency: 30s\nretention: 10s", "RetentionBelowFrequency"),
        ("frequency: 10ms\nretention: 24h", "HistoryTooLarge"),
    ],
)
def test_a_document_breaking_a_cross_field_rule_is_refused_with_the_rules_reason(document: str, reason: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(document)
    assert [problem.reason for problem in caught.value.problems] == [reason]
    assert caught.value.reason == reason
    assert str(caught.value) == caught.value.problems[0].message


def test_the_rules_run_over_the_base_as_well_as_the_document() -> None:
    base = StreamSpec.model_validate({"frequency": "10ms", "retention": "2h"})  # 720,000 points: fine
    with pytest.raises(SpecError) as caught:
        load_spec("retention: 24h\n", base=base)  # 8.64 million points
    assert caught.value.reason == "HistoryTooLarge"
    assert caught.value.problems[0].fields == ("retention", "frequency")


def test_a_rule_is_not_checked_while_a_value_is_invalid_on_its_own() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec("frequency: 5ms\nretention: 24h\n")
    assert caught.value.reason == INVALID_SPEC and "frequency" in str(caught.value)


def test_a_spec_breaking_a_rule_cannot_be_built_in_code_either() -> None:
    with pytest.raises(ValidationError, match="points per series"):
        StreamSpec.model_validate({"frequency": "10ms", "retention": "24h"})


def test_every_rule_has_a_camelcase_reason_a_summary_and_names_spec_fields() -> None:
    assert [rule.reason for rule in RULES] == [
        "BurstBelowRate",
        "FrequencyTooSlow",
        "FlushNotBelowHeartbeat",
        "RetentionBelowFrequency",
        "HistoryTooLarge",
        "SeriesDeclaredTwice",
    ]
    for rule in RULES:
        assert re.fullmatch(r"(?:[A-Z][a-z]+)+", rule.reason), rule.reason
        assert rule.summary and rule.fields
        for path in rule.fields:
            field_at(path)  # a KeyError names a field the spec does not have
        assert rule.holds(StreamSpec())
