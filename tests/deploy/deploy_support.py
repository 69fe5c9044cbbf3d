"""Paths and tool runners shared by the deployment tests (imported by name: every test folder has a conftest)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
