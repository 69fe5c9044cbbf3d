"""The README's deployment sections name files, variables and values that exist."""

from __future__ import annotations

import re

import yaml
from deploy_support import CHART, ROOT

README = (ROOT / "README.md").read_text()
SECTIONS = (
    "## Run with docker compose",
    "## Run on Kubernetes (kubectl)",
    "## Run with Helm",
    "## Develop with skaffold",
)


def section(heading: str) -> str:
    start = README.index(heading)
    end = README.find("\n## ", start + len(heading))
    return README[start : end if end != -1 else None]


def test_each_deployment_path_has_its_section_with_grpcurl_or_a_streamconfig() -> None:
    for heading in SECTIONS:
        assert heading in README
    assert "grpcurl -plaintext" in section("## Run with docker compose")
    kubectl = section("## Run on Kubernetes (kubectl)")
    assert "kubectl apply -k k8s/" in kubectl and "streamconfig" in kubectl.lower()
    assert "grpcurl -plaintext" in kubectl


def test_paths_the_sections_mention_exist() -> None:
    text = "".join(section(h) for h in SECTIONS)
    for path in set(re.findall(r"(?:k8s|helm|config)/[\w./-]+", text)):
        assert (ROOT / path.rstrip(".")).exists(), path


def test_compose_variables_and_helm_values_the_readme_sets_exist() -> None:
    compose_text = (ROOT / "docker-compose.yml").read_text()
    for name in set(re.findall(r"\b([A-Z][A-Z_]+)=", section("## Run with docker compose"))):
        assert "${" + name + ":-" in compose_text, f"README sets {name}, which docker-compose.yml does not read"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in set(re.findall(r"--set '?([a-zA-Z.]+)=", section("## Run with Helm"))):
        node = values
        for part in path.split("."):
            assert part in node, f"README sets {path}, which values.yaml does not have"
            node = node[part]
