"""Test certificates made with the real ``openssl``: certificate authorities and certificates they sign.

On pytest's ``pythonpath``: ``from certificates import authority, signed, require_openssl``. Keys are
P-256; certificates are for ``127.0.0.1`` and ``localhost`` and live two days. Each call writes
``NAME.key`` and ``NAME.crt`` into the directory given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["authority", "require_openssl", "signed"]


def require_openssl() -> None:
    """Skip without ``openssl`` on a laptop; fail under CI, which must install it."""
    if shutil.which("openssl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is needed for the TLS tests and must be installed in CI")
        pytest.skip("openssl is not installed")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def authority(directory: Path, name: str) -> None:
    """A self-signed CA: ``NAME.key``, ``NAME.crt``."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


def signed(directory: Path, name: str, ca: str, usage: str = "serverAuth", common_name: str | None = None) -> None:
    """A certificate for 127.0.0.1/localhost signed by the CA ``ca``, for ``usage`` (serverAuth, clientAuth)."""
    (directory / f"{name}.ext").write_text(
        f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name or name}", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=directory,
    )  # fmt: skip
