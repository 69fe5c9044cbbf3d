"""The live settings model: durations keep their text, bad documents are rejected whole."""

import pytest

from pulsestream.durations import Duration, format_seconds, parse_seconds
from pulsestream.spec import SpecError, StreamSpec, load_spec


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
    as_json = load_spec('{"frequency": "1s", "rateLimit": {"burst": 3}}')
    as_yaml = load_spec("frequency: 1s\nrateLimit:\n  burst: 3\n")
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
        ("series: [CPU]", "series.0"),
        ("rateLimit: {burst: 0}", "rateLimit.burst"),
        ("unknownField: 1", "unknownField"),
        ("- a list", "mapping"),
        ("frequency: [unclosed", "not valid YAML"),
    ],
)
def test_invalid_documents_are_rejected_with_the_field_named(document: str, complaint: str) -> None:
    with pytest.raises(SpecError, match=complaint):
        load_spec(document)


def test_an_empty_file_means_all_defaults() -> None:
    assert load_spec("") == StreamSpec()
