"""Shared fixtures of the deployment tests: repository paths, real tools, rendered objects.

Every check here runs a real validator offline (hadolint, check-jsonschema,
kubectl kustomize, kubernetes-validate, the Helm library). A tool missing on a
laptop skips its tests; under ``CI=true`` it fails them, so CI can never pass
by not running a check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("generator", "streamer", "operator")
CHART = ROOT / "helm" / "pulsestream"
K8S = ROOT / "k8s"
CRD_NAME = "streamconfigs.pulsestream.io.yaml"


def missing_tool(what: str) -> None:
    """Skip on a laptop, fail under CI: a validator that did not run proves nothing."""
    message = f"{what} is not available"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: every deployment check must run)")
    pytest.skip(message)


def tool(name: str) -> str:
    """Path of an executable, looked up next to this Python first (the venv's bin), then on PATH."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        missing_tool(f"the `{name}` executable")
    assert found is not None
    return found


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool with a timeout and captured text output (never a shell)."""
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, **kwargs)


def load_all(text: str) -> list[dict[str, Any]]:
    """The non-empty documents of a multi-document YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    """The StreamConfig CRD as k8s/ ships it."""
    document: dict[str, Any] = yaml.safe_load((K8S / "crds" / CRD_NAME).read_text())
    return document


@pytest.fixture(scope="session")
def streamconfig_schema(crd: dict[str, Any]) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the served version: what the API server validates StreamConfigs with."""
    (version,) = [v for v in crd["spec"]["versions"] if v.get("served") and v.get("storage")]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@pytest.fixture(scope="session")
def kustomize_objects() -> Iterator[list[dict[str, Any]]]:
    """``kubectl kustomize k8s/``, rendered once per session by the real kubectl."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing_tool("`kubectl` (apt-get install kubernetes-client)")
    assert kubectl is not None
    result = run([kubectl, "kustomize", str(K8S)])
    assert result.returncode == 0, result.stderr
    yield load_all(result.stdout)
