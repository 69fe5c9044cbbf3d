"""The spec's cross-field rules as CEL ``x-kubernetes-validations`` on the CRD's ``spec``.

Each rule of :data:`pulsestream.specrules.RULES` carries its relation in CEL
with field references (``{flushInterval} < {heartbeatInterval}``); this
module expands each reference for the API server, from the generated
structural schema:

- a duration field (a string with the duration pattern) becomes
  ``duration(self.x)``, a number stays a ``double``, an integer an ``int``,
  a list a list (its default a list literal: of strings, or empty);
- an absent field takes the model's default: ``has(self.x) ? ... : default``.
  The API server fills defaults in before it validates, so on a write the
  fallback is never taken; it makes the rule mean exactly what the model
  means on any object, defaulted or not (as the tests evaluate them);
- strings are bounded by ``maxLength`` in the schema
  (:data:`.schema.DURATION_MAX_LENGTH`), so the API server can bound each
  rule's cost when the CRD is installed.

The rule's reason starts its message, and ``fieldPath`` names the field it
blames, so ``kubectl apply`` says what the operator would say.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pulsestream.durations import PATTERN as DURATION_PATTERN
from pulsestream.specrules import FIELD_REFERENCE, RULES, Rule


def validations(spec_schema: dict[str, Any], rules: Sequence[Rule] = RULES) -> list[dict[str, str]]:
    """``x-kubernetes-validations`` entries for ``spec_schema`` (the CRD's ``spec``), one per rule."""
    return [
        {
            "rule": expand(rule.cel, spec_schema),
            "message": f"{rule.reason}: {rule.summary}",
            "fieldPath": f".{rule.fields[0]}",
        }
        for rule in rules
    ]


def expand(template: str, spec_schema: dict[str, Any]) -> str:
    """``template`` with each ``{path}`` replaced by that field's typed CEL value, default included."""
    return FIELD_REFERENCE.sub(lambda match: _value(match[1], spec_schema), template)


def _value(path: str, spec_schema: dict[str, Any]) -> str:
    parts = path.split(".")
    node = spec_schema
    for part in parts:
        node = node["properties"][part]
    if "default" not in node:
        raise ValueError(f"{path}: a rule may only name fields with a default")
    guard = " && ".join(f"has(self.{'.'.join(parts[: depth + 1])})" for depth in range(len(parts)))
    return f"({guard} ? {_typed(f'self.{path}', node)} : {_literal(node['default'], node, path)})"


def _is_duration(node: dict[str, Any]) -> bool:
    return node.get("type") == "string" and node.get("pattern") == DURATION_PATTERN


def _typed(expression: str, node: dict[str, Any]) -> str:
    return f"duration({expression})" if _is_duration(node) else expression


def _literal(value: Any, node: dict[str, Any], path: str) -> str:
    if _is_duration(node):
        return f"duration('{value}')"
    if node.get("type") == "number":
        return repr(float(value))  # a double literal: CEL does not mix int and double in one conditional
    if node.get("type") == "integer":
        return str(int(value))
    if node.get("type") == "array" and all(isinstance(item, str) for item in value):
        return "[" + ", ".join("'" + item.replace("\\", "\\\\").replace("'", "\\'") + "'" for item in value) + "]"
    raise ValueError(f"{path}: no CEL literal for a {node.get('type')} field")
