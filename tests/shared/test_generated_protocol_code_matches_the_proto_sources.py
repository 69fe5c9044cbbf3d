"""The generated protocol code in pulsestream/v1 matches proto/ exactly."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_generated_protocol_code_matches_the_proto_sources(tmp_path: pathlib.Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto/pulsestream/v1").glob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            "proto",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *protos,
        ],
        cwd=ROOT,
        check=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "protoc generated nothing"
    committed = sorted(p.relative_to(ROOT) for p in (ROOT / "pulsestream/v1").glob("*_pb2*.py*"))
    assert committed == generated, "run `make proto` and commit the result"
    for rel in generated:
        assert (ROOT / rel).read_bytes() == (tmp_path / rel).read_bytes(), f"{rel} drifted: run `make proto`"
