"""Shared fixtures of the deployment tests: repository paths, real tools, rendered objects.

Every check here runs a real validator offline (hadolint, check-jsonschema,
kubectl kustomize, kubernetes-validate, the Helm library). A tool missing on a
laptop skips its tests; under ``CI=true`` it fails them, so CI can never pass
by not running a check.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from deploy_support import CRD_NAME, K8S, load_all, missing_tool, run


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
