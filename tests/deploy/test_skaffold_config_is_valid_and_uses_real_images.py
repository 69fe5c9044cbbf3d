"""skaffold.yaml: valid for skaffold/v4beta13, builds what exists, deploys images the chart and k8s/ really use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from deploy_support import CHART, K8S, ROOT, SERVICES, run, tool

SCHEMA = Path(__file__).parent / "schemas" / "skaffold-v4beta13.json"
SKAFFOLD = ROOT / "skaffold.yaml"


def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SKAFFOLD.read_text())
    return loaded


def test_skaffold_yaml_is_valid_against_the_official_v4beta13_schema() -> None:
    assert config()["apiVersion"] == "skaffold/v4beta13"
    result = run([tool("check-jsonschema"), "--schemafile", str(SCHEMA), str(SKAFFOLD)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_misspelt_field(tmp_path: Path) -> None:
    broken = config()
    broken["deploy"]["helm"]["releases"][0]["chartDir"] = broken["deploy"]["helm"]["releases"][0].pop("chartPath")
    path = tmp_path / "skaffold.yaml"
    path.write_text(yaml.safe_dump(broken))
    assert run([tool("check-jsonschema"), "--schemafile", str(SCHEMA), str(path)]).returncode != 0


def test_every_artifact_builds_from_the_repo_root_with_an_existing_dockerfile() -> None:
    artifacts = config()["build"]["artifacts"]
    assert {a["image"] for a in artifacts} == {f"pulsestream-{s}" for s in SERVICES}
    for artifact in artifacts:
        context = ROOT / artifact.get("context", ".")
        assert context.resolve() == ROOT, "every image needs the shared pulsestream/ package"
        assert (context / artifact["docker"]["dockerfile"]).is_file()


def test_every_built_image_is_one_the_chart_and_the_manifests_use() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    release = config()["deploy"]["helm"]["releases"][0]
    assert (ROOT / release["chartPath"]).resolve() == CHART
    templates = release["setValueTemplates"]
    manifest_images = {
        container["image"].split(":")[0]
        for path in K8S.glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
    }
    for artifact in config()["build"]["artifacts"]:
        image = artifact["image"]
        component = image.removeprefix("pulsestream-")
        assert values[component]["image"]["repository"] == image, f"the chart's {component} runs {image}"
        key = image.replace("-", "_")
        assert templates[f"{component}.image.repository"] == f"{{{{.IMAGE_REPO_{key}}}}}"
        assert templates[f"{component}.image.tag"] == f"{{{{.IMAGE_TAG_{key}}}}}"
        assert image in manifest_images, f"k8s/ runs {image}, so skaffold can substitute its build"
    for path in templates:
        node: Any = values
        for part in path.split("."):
            assert part in node, f"setValueTemplates sets {path}, which values.yaml does not have"
            node = node[part]


def test_port_forwards_reach_the_streamer_and_generator_services_on_both_deploy_paths() -> None:
    forwards = {(f["resourceName"], f["port"]) for f in config()["portForward"]}
    assert forwards == {("pulsestream-streamer", 8080), ("pulsestream-generator", 50051)}
    services = {
        doc["metadata"]["name"]: {p["port"] for p in doc["spec"]["ports"]}
        for path in K8S.glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "Service"
    }
    for name, port in forwards:
        assert port in services[name]
    release = config()["deploy"]["helm"]["releases"][0]
    assert release["name"] == "pulsestream", "the chart names objects pulsestream-* only for this release name"
    assert {f["namespace"] for f in config()["portForward"]} == {release["namespace"]}


def test_the_kustomize_profile_swaps_the_chart_for_k8s() -> None:
    (profile,) = [p for p in config()["profiles"] if p["name"] == "kustomize"]
    assert profile["manifests"]["kustomize"]["paths"] == ["k8s"]
    assert {"op": "remove", "path": "/deploy/helm"} in profile["patches"]
    assert "kubectl" in profile["deploy"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == config()["deploy"]["helm"]["releases"][0]["namespace"]
