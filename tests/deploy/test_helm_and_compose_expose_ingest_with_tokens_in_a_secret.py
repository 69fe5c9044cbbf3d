"""Deployment settings for real data in: the Helm chart and docker-compose expose ingest, tokens stay in a Secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import restricted
import yaml
from deploy_support import ROOT
from pulsestream_generator.settings import GeneratorSettings
from test_helm_chart_lints_and_renders_restricted_objects import (
    ALL_ON,
    HelmReadyEmulator,
    by_kind,
    created_objects,
    default_values,
    install,
)

from pulsestream.spec import parse_spec


@pytest.mark.kmock(cls=HelmReadyEmulator)
async def test_the_chart_puts_ingest_tokens_in_a_secret_and_the_journal_on_an_empty_dir(
    kmock: Any, tmp_path: Path
) -> None:
    status, result = await install(kmock, tmp_path, ALL_ON)
    assert status == 0, result.get("error")
    objects = created_objects(kmock)
    secret = by_kind(objects, "Secret")["ps-ingest-tokens"]
    assert secret["stringData"]["tokens"] == "token-one,token-two"
    assert "token-one" not in json.dumps(by_kind(objects, "Deployment")), "tokens only in the Secret"
    pod = by_kind(objects, "Deployment")["ps-generator"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["GENERATOR_INGEST_TOKENS"]["valueFrom"]["secretKeyRef"] == {"name": "ps-ingest-tokens", "key": "tokens"}
    values = restricted.env_of(container)
    settings = GeneratorSettings.from_env(
        {name: str(value) for name, value in values.items() if name.startswith("GENERATOR_")}
    )
    assert (settings.ingest_undeclared, settings.ingest_max_series, settings.ingest_max_in_flight) == ("refuse", 500, 8)
    journal = settings.ingest_journal_dir
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == journal)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["sizeLimit"] == "2Gi"
    streamconfig = next(obj for obj in objects if obj["kind"] == "StreamConfig")
    assert [entry.name for entry in parse_spec(streamconfig["spec"] | {"target": None}).published] == [
        "orders",
        "checkout.latency",
    ]


def test_the_default_chart_journals_published_points_and_leaves_ingest_open() -> None:
    ingest = default_values()["generator"]["ingest"]
    assert ingest["journal"]["enabled"] and ingest["tokens"] == [] and not ingest["existingSecret"]
    assert ingest["maxSeries"] == GeneratorSettings().ingest_max_series
    assert ingest["maxPointsPerRequest"] == GeneratorSettings().ingest_max_points_per_request
    assert ingest["maxInFlight"] == GeneratorSettings().ingest_max_in_flight


def test_compose_takes_ingest_tokens_from_the_environment_and_keeps_the_journal_on_a_volume() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    generator = compose["services"]["generator"]
    environment = generator["environment"]
    assert environment["GENERATOR_INGEST_TOKENS"] == "${GENERATOR_INGEST_TOKENS:-}"
    journal = environment["GENERATOR_INGEST_JOURNAL_DIR"]
    assert f"journal:{journal}" in generator["volumes"] and "journal" in compose["volumes"]
    dockerfile = (ROOT / "generator" / "Dockerfile").read_text()
    assert f"-o 10001 -g 10001 -m 0700 {journal}" in dockerfile, "the volume's mount point belongs to the service"
