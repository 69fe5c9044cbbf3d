"""The README's Operator section documents every StreamConfig field, every reason and the RBAC shipped."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pulsestream_operator import handlers

from pulsestream.spec import INVALID_SPEC, RateLimit, StreamSpec
from pulsestream.specrules import RULES

ROOT = Path(__file__).resolve().parents[2]


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Operator\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_every_spec_field_is_in_the_operator_section() -> None:
    text = section()
    fields = [info.alias or name for name, info in StreamSpec.model_fields.items() if name != "rate_limit"]
    fields += [f"rateLimit.{info.alias or name}" for name, info in RateLimit.model_fields.items()]
    for field in fields:
        assert f"`{field}`" in text, field


def test_every_reason_the_operator_can_give_is_in_the_operator_section() -> None:
    reasons = {rule.reason for rule in RULES} | {INVALID_SPEC}
    reasons |= set(re.findall(r'Problem\(\s*"([A-Za-z]+)"', Path(handlers.__file__).read_text()))
    assert {"BurstBelowRate", "InvalidSpec", "ConfigMapConflict"} <= reasons
    for reason in reasons:
        assert f"`{reason}`" in section(), reason


def test_the_rbac_table_matches_operator_rbac_yaml() -> None:
    documents = yaml.safe_load_all((ROOT / "operator" / "rbac.yaml").read_text())
    role = next(document for document in documents if document["kind"] == "ClusterRole")
    text = section()
    for rule in role["rules"]:
        group = rule["apiGroups"][0] or '""'
        row = f"| `{group}` | `{rule['resources'][0]}` | {', '.join(rule['verbs'])} |"
        assert row in text, row
