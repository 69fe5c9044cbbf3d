"""Turn the settings model's JSON schema into a Kubernetes structural schema.

Pydantic writes JSON Schema 2020-12; the API server wants an OpenAPI v3.0
*structural* schema (apiextensions.k8s.io/v1). The differences that matter:

- no ``$ref``/``$defs``: references are inlined;
- every node has a ``type``; ``anyOf`` of a type and ``null`` (an optional
  field) becomes the type itself, since an absent field is already optional;
- no ``title`` (noise in ``kubectl explain``); ``additionalProperties: false``
  is dropped: a structural schema may not combine it with ``properties``;
  unknown fields are pruned by the API server, or rejected under
  ``kubectl``'s default strict field validation;
- ``exclusiveMinimum``/``exclusiveMaximum`` are booleans next to
  ``minimum``/``maximum`` (OpenAPI 3.0), not numbers (JSON Schema 2020);
- a duration's range (``x-duration-minimum``/``-maximum`` from
  :func:`pulsestream.durations.within`) becomes a CEL rule in
  ``x-kubernetes-validations``, which compares Go durations: our duration
  syntax (``100ms``, ``1m30s``) is a subset of Go's, so ``duration(self)``
  parses every value the pattern admits. Strings get a ``maxLength`` so the
  API server can bound the rule's cost;
- an object with defaults inside it defaults to ``{}`` so the API server
  fills those nested defaults in when the whole object is left out (not
  list items, which are never absent);
- an array of unique scalars is ``x-kubernetes-list-type: set``: the API
  server rejects duplicates, as the model does.
"""

from __future__ import annotations

import copy
from typing import Any

#: Longest duration text accepted; bounds the cost of the CEL range rules.
DURATION_MAX_LENGTH = 32

_DROPPED = {"title", "additionalProperties", "$defs"}


def structural(json_schema: dict[str, Any], unique_arrays: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Return a structural OpenAPI v3 schema equivalent to a pydantic model's JSON schema.

    ``unique_arrays`` names the top-level properties whose items must be
    unique (the model checks that in a validator JSON schema cannot see).
    """
    defs = json_schema.get("$defs", {})
    result = _convert(json_schema, defs, path="")
    for name in unique_arrays:
        result["properties"][name]["x-kubernetes-list-type"] = "set"
    return result


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    name = node["$ref"].rsplit("/", 1)[-1]
    merged: dict[str, Any] = copy.deepcopy(defs[name])
    merged.update({key: value for key, value in node.items() if key != "$ref"})  # the use site's description wins
    return merged


def _optional(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, {type: null}]`` -> ``X`` (keeping the outer keys but a ``null`` default)."""
    choices = node.get("anyOf")
    if not choices:
        return node
    kept = [choice for choice in choices if choice.get("type") != "null"]
    if len(kept) != 1:
        raise ValueError(f"cannot express anyOf {choices!r} in a structural schema")
    merged = {key: value for key, value in node.items() if key != "anyOf"}
    merged.update(kept[0])
    if merged.get("default", 0) is None:
        del merged["default"]
    return merged


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    node = _optional(_resolve(node, defs))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key.startswith("x-duration-"):
            continue
        if key == "properties":
            out[key] = {name: _convert(child, defs, f"{path}.{name}") for name, child in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = copy.deepcopy(value)
    if "type" not in out:
        raise ValueError(f"schema node {path or '(root)'} has no type; a structural schema needs one everywhere")
    if "x-duration-minimum" in node:
        low, high = node["x-duration-minimum"], node["x-duration-maximum"]
        out["maxLength"] = DURATION_MAX_LENGTH
        out["x-kubernetes-validations"] = [
            {
                "rule": f"duration(self) >= duration('{low}') && duration(self) <= duration('{high}')",
                "message": f"must be between {low} and {high}",
            }
        ]
    # Not for list items: an item is never absent, and {} would be an invalid default for an item with a
    # required key (the API server refuses a CRD whose defaults do not validate).
    if out["type"] == "object" and "default" not in out and not path.endswith("[]") and _has_defaults(out):
        out["default"] = {}
    return out


def _has_defaults(node: dict[str, Any]) -> bool:
    return any("default" in child for child in node.get("properties", {}).values())


def problems(schema: dict[str, Any], path: str = "") -> list[str]:
    """Why ``schema`` is not structural (empty when it is), after the API server's rules.

    Checked: every node has a ``type``; no ``$ref``, ``$defs``, ``definitions``,
    ``anyOf``/``oneOf``/``allOf``/``not`` carrying types; ``additionalProperties``
    never next to ``properties``; ``items`` is one schema; ``nullable`` only with a type.
    """
    found: list[str] = []
    where = path or "(root)"
    for key in ("$ref", "$defs", "definitions", "title"):
        if key in schema:
            found.append(f"{where}: {key} is not allowed")
    for key in ("anyOf", "oneOf", "allOf", "not"):
        if key in schema:
            found.append(f"{where}: {key} is not supported here")
    if "type" not in schema and not schema.get("x-kubernetes-int-or-string"):
        found.append(f"{where}: no type")
    if "properties" in schema and "additionalProperties" in schema:
        found.append(f"{where}: properties and additionalProperties are mutually exclusive")
    if schema.get("type") == "array" and not isinstance(schema.get("items"), dict):
        found.append(f"{where}: an array needs exactly one items schema")
    for name, child in schema.get("properties", {}).items():
        found.extend(problems(child, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        found.extend(problems(schema["items"], f"{path}[]"))
    return found
