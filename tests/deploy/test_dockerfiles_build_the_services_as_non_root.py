"""Dockerfiles: hadolint-clean, multi-stage, non-root, and their build steps really produce the service.

No Docker engine is available here, so the build is checked in parts that
can run offline: hadolint on every file, the structure of each stage, the
dependency list the builder derives from pyproject.toml, a wheel built from
exactly the files the Dockerfile copies, and the image's HEALTHCHECK command
run against the real service.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import restricted
import yaml
from deploy_support import ROOT, SERVICES, run, tool
from loopback import free_port
from services import Service, Stack

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXPECTED_PORTS = {"generator": {50051, 9464}, "streamer": {8080}, "operator": {8081}}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuation lines joined, comments dropped)."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            lines.append(pending)
            pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            stages.append(Stage(base=base, name=parts[2] if len(parts) > 2 else None))
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def dockerfile(service: str) -> Path:
    return ROOT / service / "Dockerfile"


@pytest.mark.parametrize("service", SERVICES)
def test_hadolint_passes(service: str) -> None:
    result = run([tool("hadolint"), "--no-color", str(dockerfile(service))])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_multi_stage_on_a_pinned_slim_python_with_nothing_built_in_the_final_stage(service: str) -> None:
    _, stages = parse(dockerfile(service))
    assert len(stages) >= 2
    final = stages[-1]
    # A full patch version, never a floating tag: rebuilds are reproducible.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", final.base), final.base
    assert all(stage.base == final.base for stage in stages), "builder and runtime share one interpreter"
    runs = " ".join(final.all("RUN"))
    assert "pip install" not in runs and "apt-get" not in runs, "no installs, compilers or caches in the final stage"
    assert any(args.startswith(f"--from={stages[0].name} /opt/venv") for args in final.all("COPY"))


@pytest.mark.parametrize("service", SERVICES)
def test_dependencies_install_in_their_own_layer_before_the_sources_are_copied(service: str) -> None:
    _, stages = parse(dockerfile(service))
    builder = stages[0].instructions
    copies = [i for i, (key, _) in enumerate(builder) if key == "COPY"]
    deps = next(i for i, (key, args) in enumerate(builder) if key == "RUN" and "requirements.txt" in args)
    assert builder[copies[0]][1] == "pyproject.toml ./", "only pyproject.toml precedes the dependency layer"
    assert all(i > deps for i in copies[1:]), "sources are copied after dependencies are installed"


@pytest.mark.parametrize("service", SERVICES)
def test_runs_the_console_script_as_a_numeric_non_root_user(service: str) -> None:
    _, stages = parse(dockerfile(service))
    final = stages[-1]
    (user,) = final.all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric, so Kubernetes can verify runAsNonRoot"
    (entrypoint,) = final.all("ENTRYPOINT")
    script = json.loads(entrypoint)
    assert script == [f"pulsestream-{service}"]
    assert PYPROJECT["project"]["scripts"][script[0]].startswith(f"pulsestream_{service}.")


@pytest.mark.parametrize("service", SERVICES)
def test_exposes_the_ports_and_env_defaults_the_manifests_use(service: str) -> None:
    _, stages = parse(dockerfile(service))
    final = stages[-1]
    exposed = {int(port) for args in final.all("EXPOSE") for port in args.split()}
    assert exposed == EXPECTED_PORTS[service]
    env = dict(item.split("=", 1) for args in final.all("ENV") for item in shlex.split(args) if "=" in item)
    settings_names = restricted.known_env(service)
    own = {name for name in env if name.startswith(f"{service.upper()}_") or name.startswith("LOG_")}
    assert own <= settings_names, own - settings_names
    if service != "operator":
        assert env[f"{service.upper()}_HOST"] == "0.0.0.0", "a container must listen beyond loopback"


def test_dockerignore_sends_only_what_the_dockerfiles_copy() -> None:
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*", "allow-list: everything else (.venv, .git, tests) stays out of the context"
    included = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    for service in SERVICES:
        _, stages = parse(dockerfile(service))
        for args in stages[0].all("COPY"):
            source = args.split()[0]
            top = source.split("/")[0].rstrip("/")
            assert top in included, f"{service}/Dockerfile copies {source}, which .dockerignore leaves out"


@pytest.mark.parametrize("service", SERVICES)
def test_the_builder_steps_produce_the_service_from_exactly_the_copied_files(service: str, tmp_path: Path) -> None:
    """Replay the builder stage on a context holding only what its COPY lines name; build the wheel."""
    _, stages = parse(dockerfile(service))
    context = tmp_path / "context"
    context.mkdir()
    for args in stages[0].all("COPY"):
        source, destination = args.split()
        target = context / (source if destination.endswith("/") and destination != "./" else Path(source).name)
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.write_bytes((ROOT / source).read_bytes())
    # The dependency layer: the Dockerfile's own python -c command, run in that context.
    deps_run = next(args for args in stages[0].all("RUN") if "requirements.txt" in args)
    command = re.search(r'python -c "(.*?)"', deps_run)
    assert command is not None
    listed = subprocess.run(
        [sys.executable, "-c", command.group(1)], cwd=context, capture_output=True, text=True, check=True
    ).stdout.split()
    # The generator adds the hiredis extra (the C parser its shared history's Redis client uses).
    extra = PYPROJECT["project"]["optional-dependencies"]["hiredis"] if service == "generator" else []
    assert listed == PYPROJECT["project"]["dependencies"] + extra, "runtime dependencies only, no dev extra"
    # The project layer: pip builds the distribution from the copied files alone.
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert f"pulsestream_{service}/__main__.py" in names
    assert "pulsestream/spec.py" in names
    assert f"pulsestream-{service} = pulsestream_{service}.__main__:main" in entry_points
    others = {f"pulsestream_{other}/__init__.py" for other in SERVICES if other != service}
    assert not names & others, "an image carries only its own service"


# --- the HEALTHCHECK commands, run against the real services ----------------------------------


def healthcheck(service: str) -> list[str]:
    """The image's HEALTHCHECK command, with this venv's Python standing in for the image's."""
    _, stages = parse(dockerfile(service))
    (check,) = stages[-1].all("HEALTHCHECK")
    command: list[str] = json.loads(check.split("CMD", 1)[1])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def compose_healthcheck(service: str) -> list[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test: list[str] = compose["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return test[1:]


async def probe(command: list[str], env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(process.wait(), timeout=30)


async def wait_healthy(command: list[str], env: dict[str, str], timeout: float = 45) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await probe(command, env) != 0:
        assert asyncio.get_running_loop().time() < deadline, "the service never became healthy"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("service", ["generator", "streamer"])
async def test_the_image_healthcheck_passes_on_the_running_service_and_fails_without_it(
    service: str, stack: Stack
) -> None:
    command = healthcheck(service)
    assert compose_healthcheck(service)[1:] == command[1:], "compose checks health the same way as the image"
    running: Service
    if service == "generator":
        running = stack.generator(start=False, GENERATOR_METRICS_PORT="0", LOG_LEVEL="warning")
    else:  # nothing at its generator address: degraded, alive
        running = stack.streamer(f"127.0.0.1:{free_port()}", start=False, LOG_LEVEL="warning")
    running.start()  # the image's HEALTHCHECK is the readiness check under test here
    try:
        await wait_healthy(command, running.env)
    finally:
        await running.aio.stop(30)
    assert await probe(command, running.env) != 0, "with the service gone the check must fail"
