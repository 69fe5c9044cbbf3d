"""The StreamConfig CRD: generated from the model, structural, and rejecting what the API server would.

The CRD's CEL rules (duration ranges, and the spec's cross-field rules) are evaluated with cel-python, a CEL
implementation of its own, and must agree with the Python model on a table of specs.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from celpy import celtypes
from pulsestream_operator import crd, schema

from pulsestream.spec import SpecError, parse_spec
from pulsestream.specrules import RULES

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "k8s" / "samples").glob("streamconfig-*.yaml"))


def open_api_schema() -> dict[str, Any]:
    document = yaml.safe_load(crd.CRD_PATH.read_text())
    result: dict[str, Any] = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def as_api_server(node: dict[str, Any]) -> dict[str, Any]:
    """The schema as ``kubectl apply`` (strict field validation) and the API server enforce it, for jsonschema.

    Unknown fields are errors (``additionalProperties: false`` on every object with properties);
    ``x-kubernetes-list-type: set`` means unique items. OpenAPI 3.0's boolean
    ``exclusiveMinimum`` is Draft 4's, so the result is checked with a Draft 4 validator.
    """
    out = copy.deepcopy(node)
    if "properties" in out and out.get("type") == "object":
        out["additionalProperties"] = False
        out["properties"] = {key: as_api_server(value) for key, value in out["properties"].items()}
    if "items" in out:
        out["items"] = as_api_server(out["items"])
    if out.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


_CEL = celpy.Environment()


@functools.cache
def _program(rule: str) -> celpy.Runner:
    return _CEL.program(_CEL.compile(rule))


def _cel_value(node: dict[str, Any], value: Any) -> Any:
    """``value`` as the API server hands it to CEL: typed by the value, except that a number field holds a double
    even when written as an integer (``requestsPerSecond: 5``)."""
    if isinstance(value, dict):
        properties = node.get("properties", {})
        return celtypes.MapType(
            {celtypes.StringType(key): _cel_value(properties.get(key, {}), item) for key, item in value.items()}
        )
    if isinstance(value, list):
        return celtypes.ListType([_cel_value(node.get("items", {}), item) for item in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, (int, float)):
        return celtypes.DoubleType(value) if node.get("type") == "number" else celtypes.IntType(value)
    return celtypes.StringType(str(value))


def cel_passes(rule: str, node: dict[str, Any], value: Any) -> bool | None:
    """Whether ``rule`` holds for ``value`` (``self``); ``None`` when CEL cannot evaluate it (a value of the wrong
    type or shape, which the type or the pattern already rejects)."""
    try:
        result = _program(rule).evaluate({"self": _cel_value(node, value)})
    except celpy.CELEvalError:
        return None
    if isinstance(result, celpy.CELEvalError):
        return None
    return bool(result)


def cel_errors(node: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Evaluate every CEL rule of the schema (``x-kubernetes-validations``, at any depth) on ``value``."""
    errors = [
        f"{path}: {rule['message']}"
        for rule in node.get("x-kubernetes-validations", [])
        if cel_passes(rule["rule"], node, value) is False
    ]
    if isinstance(value, dict):
        for key, child in node.get("properties", {}).items():
            if key in value:
                errors.extend(cel_errors(child, value[key], f"{path}.{key}"))
    return errors


def with_defaults(node: dict[str, Any], value: Any) -> Any:
    """``value`` after the API server's defaulting: absent fields with a default get it, at every depth."""
    if not isinstance(value, dict):
        return value
    filled = dict(value)
    for key, child in node.get("properties", {}).items():
        if key not in filled and "default" in child:
            filled[key] = copy.deepcopy(child["default"])
        if key in filled:
            filled[key] = with_defaults(child, filled[key])
    return filled


def api_server_errors(obj: dict[str, Any]) -> list[str]:
    schema_ = open_api_schema()
    validator = jsonschema.Draft4Validator(as_api_server(schema_))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    return errors + cel_errors(schema_, obj)


def streamconfig(spec: Any = None, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "pulsestream.io/v1alpha1",
        "kind": "StreamConfig",
        "metadata": {"name": "x"},
        **extra,
    }
    if spec is not None:
        obj["spec"] = spec
    return obj


def test_the_committed_crd_and_its_helm_copy_are_what_the_model_generates() -> None:
    text = crd.render()
    assert crd.CRD_PATH.read_text() == text, "k8s CRD drifted: run `make crd`"
    assert crd.HELM_CRD_PATH.read_text() == text, "Helm chart's CRD copy drifted: run `make crd`"
    assert crd.main(["--check"]) == 0


def test_the_crd_is_a_valid_kubernetes_object() -> None:
    document = yaml.safe_load(crd.CRD_PATH.read_text())
    kubernetes_validate.validate(document, "1.31", strict=True)
    spec = document["spec"]
    assert (spec["group"], spec["names"]["kind"], spec["names"]["plural"], spec["scope"]) == (
        "pulsestream.io",
        "StreamConfig",
        "streamconfigs",
        "Namespaced",
    )
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert "psc" in spec["names"]["shortNames"]
    columns = {column["name"]: column["jsonPath"] for column in version["additionalPrinterColumns"]}
    assert set(columns) >= {"Frequency", "Buffer", "Rate", "Ready", "Age"}


def test_the_schema_is_structural() -> None:
    assert schema.problems(open_api_schema()) == []


def test_the_structural_check_catches_what_the_api_server_refuses() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"$ref": "#/x"},
            "b": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "c": {"type": "object", "properties": {"d": {"type": "string"}}, "additionalProperties": False},
            "e": {"type": "array"},
        },
    }
    found = "\n".join(schema.problems(bad))
    for expected in (".a: $ref", ".a: no type", ".b: anyOf", ".c: properties and additionalProperties", ".e: an array"):
        assert expected in found


def test_every_default_is_valid_against_its_own_schema() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        if "default" in node:
            validator = jsonschema.Draft4Validator(as_api_server(node))
            assert not list(validator.iter_errors(node["default"])), path
            assert not cel_errors(node, node["default"]), path
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}.{key}")

    walk(open_api_schema(), "")


def test_printer_columns_point_at_fields_the_schema_has() -> None:
    document = yaml.safe_load(crd.CRD_PATH.read_text())
    root = open_api_schema()
    for column in document["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path == ".metadata.creationTimestamp":
            continue
        node = root
        for part in re.sub(r"\[\?.*?\]", "", path).strip(".").split("."):
            node = node.get("items", node)["properties"][part]
        assert node["type"] in ("string", "integer", "number"), path


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.name)
def test_the_samples_are_accepted_by_the_schema_and_the_model(sample: Path) -> None:
    obj = yaml.safe_load(sample.read_text())
    assert api_server_errors(obj) == []
    parse_spec(obj["spec"])


def test_there_is_a_default_and_a_high_frequency_sample() -> None:
    assert {path.name for path in SAMPLES} >= {"streamconfig-default.yaml", "streamconfig-high-frequency.yaml"}


BAD = {
    "buffer size as text": ({"bufferSize": "big"}, "bufferSize"),
    "buffer size zero": ({"bufferSize": 0}, "bufferSize"),
    "rate of zero (exclusive minimum)": ({"rateLimit": {"requestsPerSecond": 0}}, "rateLimit.requestsPerSecond"),
    "burst above maximum": ({"rateLimit": {"burst": 10_000_000}}, "rateLimit.burst"),
    "frequency without unit": ({"frequency": "100"}, "frequency"),
    "frequency as words": ({"frequency": "fast"}, "frequency"),
    "frequency as number": ({"frequency": 100}, "frequency"),
    "frequency above range": ({"frequency": "2h"}, "frequency"),
    "frequency below range": ({"frequency": "5ms"}, "frequency"),
    "retention above range": ({"retention": "25h"}, "retention"),
    "unknown field": ({"speed": "fast"}, "speed"),
    "unknown nested field": ({"rateLimit": {"perMinute": 3}}, "rateLimit"),
    "duplicate series": ({"series": ["cpu", "cpu"]}, "series"),
    "bad series name": ({"series": ["CPU!"]}, "series"),
    "no series": ({"series": []}, "series"),
    "bad target": ({"target": "Not_A_Name"}, "target"),
}


@pytest.mark.parametrize("spec,field", BAD.values(), ids=BAD.keys())
def test_bad_values_are_rejected_by_the_schema_and_by_the_model(spec: dict[str, Any], field: str) -> None:
    errors = api_server_errors(streamconfig(spec))
    assert errors, f"the schema accepted {spec}"
    assert any(field.rsplit(".", maxsplit=1)[-1] in error for error in errors), errors
    with pytest.raises(SpecError):
        parse_spec(spec)


def test_a_streamconfig_without_spec_is_rejected() -> None:
    assert any("'spec' is a required property" in error for error in api_server_errors(streamconfig()))


def test_an_empty_spec_is_accepted_and_defaults_to_the_models_defaults() -> None:
    assert api_server_errors(streamconfig({})) == []
    spec_schema = open_api_schema()["properties"]["spec"]
    defaults = {key: value["default"] for key, value in spec_schema["properties"].items() if "default" in value}
    rate = spec_schema["properties"]["rateLimit"]["properties"]
    defaults["rateLimit"] = {key: value["default"] for key, value in rate.items()}
    assert parse_spec(defaults) == parse_spec({})


def spec_schema() -> dict[str, Any]:
    result: dict[str, Any] = open_api_schema()["properties"]["spec"]
    return result


def model_reasons(spec: dict[str, Any]) -> list[str]:
    """The reasons the Python model (the operator, both services) refuses ``spec`` for; empty when it accepts it."""
    try:
        parse_spec(spec)
    except SpecError as error:
        return [problem.reason for problem in error.problems]
    return []


def cel_reasons(spec: dict[str, Any]) -> list[str]:
    """The reasons of the CRD's cross-field rules (on ``spec``) that ``spec`` breaks, in the CRD's order."""
    node = spec_schema()
    return [
        rule["message"].partition(":")[0]
        for rule in node["x-kubernetes-validations"]
        if cel_passes(rule["rule"], node, spec) is False
    ]


AGREEMENT: dict[str, dict[str, Any]] = {
    "the defaults (an empty spec)": {},
    "every default written out": parse_spec({}).to_document(),
    "the default sample's values": {"frequency": "100ms", "retention": "10m", "flushInterval": "50ms"},
    "burst below rate": {"rateLimit": {"requestsPerSecond": 20, "burst": 10}},
    "burst below a fractional rate": {"rateLimit": {"requestsPerSecond": 10.5, "burst": 10}},
    "burst set alone below the default rate": {"rateLimit": {"burst": 3}},
    "rate set alone above the default burst": {"rateLimit": {"requestsPerSecond": 11}},
    "burst equal to rate": {"rateLimit": {"requestsPerSecond": 10, "burst": 10}},
    "frequency slower than 1m": {"frequency": "2m", "retention": "1h"},
    "frequency of 1m30s": {"frequency": "1m30s", "retention": "1h"},
    "frequency exactly 1m": {"frequency": "1m", "retention": "1m"},
    "flush equal to heartbeat": {"flushInterval": "5s", "heartbeatInterval": "5s"},
    "flush above the default heartbeat": {"heartbeatInterval": "1s", "flushInterval": "1.5s"},
    "flush just below heartbeat": {"flushInterval": "4999ms", "heartbeatInterval": "5s"},
    "retention below frequency": {"frequency": "30s", "retention": "10s"},
    "retention set alone below the default frequency": {"frequency": "1s", "retention": "1s"},
    "history of 8.6 million points": {"frequency": "10ms", "retention": "24h"},
    "history of exactly one million points": {"frequency": "10ms", "retention": "2h46m40s"},
    "history one millisecond over a million points": {"frequency": "10ms", "retention": "10000001ms"},
    "history at 100ms for 24h": {"frequency": "100ms", "retention": "24h"},
    "a published series named like a default synthetic one": {"published": [{"name": "cpu"}]},
    "a published series named like a listed synthetic one": {"series": ["orders"], "published": [{"name": "orders"}]},
    "published series apart from the synthetic ones": {
        "series": ["cpu"],
        "published": [{"name": "memory", "unit": "MiB", "expectedRange": [0, 2048]}, {"name": "checkout.latency"}],
    },
    "two rules at once": {
        "rateLimit": {"requestsPerSecond": 20, "burst": 1},
        "flushInterval": "10s",
        "heartbeatInterval": "1s",
    },
    "every rule but one at once": {
        "frequency": "1h",
        "retention": "30m",
        "flushInterval": "10s",
        "heartbeatInterval": "10s",
        "rateLimit": {"requestsPerSecond": 100, "burst": 1},
    },
}


@pytest.mark.parametrize("spec", AGREEMENT.values(), ids=AGREEMENT.keys())
def test_the_crds_cross_field_rules_refuse_exactly_what_the_model_refuses(spec: dict[str, Any]) -> None:
    expected = model_reasons(spec)
    assert cel_reasons(spec) == expected
    assert cel_reasons(with_defaults(spec_schema(), spec)) == expected  # as the API server sees it after defaulting
    assert model_reasons(with_defaults(spec_schema(), spec)) == expected


def test_the_agreement_table_breaks_every_rule_and_passes_every_rule() -> None:
    seen = {reason for spec in AGREEMENT.values() for reason in model_reasons(spec)}
    assert seen == {rule.reason for rule in RULES}
    assert sum(not model_reasons(spec) for spec in AGREEMENT.values()) >= 5


def test_each_cross_field_rule_is_in_the_crd_once_with_its_reason_and_the_field_it_blames() -> None:
    rules = spec_schema()["x-kubernetes-validations"]
    assert [rule["message"].partition(":")[0] for rule in rules] == [rule.reason for rule in RULES]
    for entry, rule in zip(rules, RULES, strict=True):
        assert entry["fieldPath"] == f".{rule.fields[0]}"
        node = spec_schema()
        for part in rule.fields[0].split("."):
            node = node["properties"][part]  # the field it blames exists


def test_every_string_a_cross_field_rule_reads_is_bounded_so_the_api_server_can_bound_its_cost() -> None:
    node = spec_schema()
    for rule in RULES:
        for path in rule.fields:
            field = node
            for part in path.split("."):
                field = field["properties"][part]
            if field["type"] == "string":
                assert field.get("maxLength", 0) <= schema.DURATION_MAX_LENGTH, path


def test_a_streamconfig_the_operator_would_refuse_is_refused_by_the_api_server_with_the_same_reason() -> None:
    errors = api_server_errors(streamconfig({"frequency": "10ms", "retention": "24h"}))
    assert errors == [".spec: HistoryTooLarge: retention / frequency must be at most 1,000,000 points per series"]
