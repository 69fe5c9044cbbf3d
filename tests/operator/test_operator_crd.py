"""The StreamConfig CRD: generated from the model, structural, and rejecting what the API server would."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pulsestream_operator import crd, schema

from pulsestream.durations import parse_seconds
from pulsestream.spec import SpecError, parse_spec

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "k8s" / "samples").glob("streamconfig-*.yaml"))
RANGE_RULE = re.compile(
    r"^duration\(self\) >= duration\('(?P<low>[^']+)'\) && duration\(self\) <= duration\('(?P<high>[^']+)'\)$"
)


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


def cel_errors(node: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Evaluate the duration range rules (the only CEL rules the generator writes) on ``value``."""
    errors: list[str] = []
    for rule in node.get("x-kubernetes-validations", []):
        match = RANGE_RULE.match(rule["rule"])
        assert match, f"rule the test cannot evaluate: {rule['rule']}"
        try:
            seconds = parse_seconds(value)
        except (ValueError, AttributeError):
            continue  # the type or the pattern already rejects it
        if not parse_seconds(match["low"]) <= seconds <= parse_seconds(match["high"]):
            errors.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for key, child in node.get("properties", {}).items():
            if key in value:
                errors.extend(cel_errors(child, value[key], f"{path}.{key}"))
    return errors


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
