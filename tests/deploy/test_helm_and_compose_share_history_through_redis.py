"""Deployment of the shared published history: Helm (external Redis, or one in the chart) and compose's ``ha``.

The chart is really rendered (helm-sdkpy into the API emulator) and held to the same checks as the
rest (restricted pods, env the services read, values they accept); the compose file is read with
Compose's own interpolation rules and the services' settings classes. Nothing secret goes into a
Deployment, the operator or the CRD: the password is a mounted Secret file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import restricted
import yaml
from deploy_support import ROOT
from pulsestream_generator.settings import GeneratorSettings
from test_compose_file_is_valid_health_gated_and_hardened import document, interpolate
from test_helm_chart_lints_and_renders_restricted_objects import (
    ALL_ON,
    HelmReadyEmulator,
    by_kind,
    created_objects,
    install,
    merged,
)

HISTORY_ON = {
    "generator": {"history": {"existingSecret": "redis-auth", "passwordKey": "pw"}},
    "redis": {"enabled": True},
}
EXTERNAL = {
    "generator": {
        "history": {
            "url": "rediss://redis.platform.svc:6380/2",
            "existingSecret": "redis-auth",
            "tls": {"caSecret": "redis-ca", "caKey": "ca.pem"},
            "keyPrefix": "team-a",
        }
    }
}


def generator_pod(objects: list[dict[str, Any]], name: str = "ps-generator") -> dict[str, Any]:
    pod: dict[str, Any] = by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]
    return pod


@pytest.mark.kmock(cls=HelmReadyEmulator)
async def test_the_in_chart_redis_is_restricted_and_the_generators_share_it_with_a_mounted_password(
    kmock: Any, tmp_path: Path
) -> None:
    status, result = await install(kmock, tmp_path, merged(ALL_ON, HISTORY_ON))
    assert status == 0, result.get("error")
    objects = created_objects(kmock)
    assert restricted.schema_errors(objects)[0] == []
    redis = by_kind(objects, "Deployment")["ps-redis"]
    for check in (restricted.restricted_violations, restricted.unknown_env, restricted.invalid_env):
        assert [p for w in restricted.workloads(objects) for p in check(w)] == []
    assert redis["spec"]["replicas"] == 1 and redis["spec"]["strategy"]["type"] == "Recreate"
    (server,) = redis["spec"]["template"]["spec"]["containers"]
    assert server["image"] == "docker.io/library/redis:7.2.6-alpine"
    assert "--requirepass" in server["args"] and "--appendonly" in server["args"]
    assert {v["name"]: v for v in redis["spec"]["template"]["spec"]["volumes"]}["data"]["emptyDir"]
    assert by_kind(objects, "Service")["ps-redis"]["spec"]["ports"][0]["port"] == 6379

    pod = generator_pod(objects)
    (container,) = pod["containers"]
    env = restricted.env_of(container)
    assert env["GENERATOR_HISTORY_URL"] == "redis://ps-redis:6379/0"
    assert "GENERATOR_INGEST_JOURNAL_DIR" not in env, "no journal when the history is shared"
    password_file = str(env["GENERATOR_HISTORY_PASSWORD_FILE"])
    mount = next(m for m in container["volumeMounts"] if password_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"] == {"secretName": "redis-auth", "items": [{"key": "pw", "path": "password"}]}
    settings = GeneratorSettings.from_env({k: str(v) for k, v in env.items() if k.startswith("GENERATOR_")})
    assert settings.history_url and not settings.ingest_journal_dir
    # Nothing secret in the StreamConfig the operator reads, or in any ConfigMap.
    for kind in ("StreamConfig", "ConfigMap"):
        assert "redis-auth" not in json.dumps(by_kind(objects, kind)) and "requirepass" not in json.dumps(
            by_kind(objects, kind)
        )


@pytest.mark.kmock(cls=HelmReadyEmulator)
async def test_an_external_redis_with_tls_gets_its_url_ca_file_and_key_prefix(kmock: Any, tmp_path: Path) -> None:
    status, result = await install(kmock, tmp_path, EXTERNAL)
    assert status == 0, result.get("error")
    objects = created_objects(kmock)
    assert "ps-redis" not in by_kind(objects, "Deployment") and "pulsestream-redis" not in by_kind(
        objects, "Deployment"
    )
    name = next(n for n in by_kind(objects, "Deployment") if n.endswith("-generator"))
    pod = generator_pod(objects, name)
    env = restricted.env_of(pod["containers"][0])
    assert env["GENERATOR_HISTORY_URL"] == "rediss://redis.platform.svc:6380/2"
    assert env["GENERATOR_HISTORY_TLS_CA_FILE"] == "/etc/pulsestream-history-ca/ca.pem"
    assert env["GENERATOR_HISTORY_KEY_PREFIX"] == "team-a"
    assert {"secretName": "redis-ca"} in [v.get("secret") for v in pod["volumes"]]


def test_the_chart_refuses_a_history_url_that_is_not_redis() -> None:
    import jsonschema

    schema = json.loads((ROOT / "helm/pulsestream/values.schema.json").read_text())
    values = yaml.safe_load((ROOT / "helm/pulsestream/values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(merged(values, EXTERNAL))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(merged(values, {"generator": {"history": {"url": "http://x"}}}))


def ha_env() -> dict[str, str]:
    lines = (ROOT / "config/ha.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_compose_profile_ha_runs_redis_and_two_generators_behind_the_streamer() -> None:
    raw = document()["services"]
    assert raw["redis"]["profiles"] == ["ha"] and raw["generator-b"]["profiles"] == ["ha"]
    assert not raw["generator"].get("profiles") and not raw["streamer"].get("profiles")
    environ = ha_env()
    assert environ["COMPOSE_PROFILES"] == "ha"
    services = interpolate(document(), environ)["services"]
    addresses = services["streamer"]["environment"]["STREAMER_GENERATOR_ADDRESS"].split(",")
    assert [address.split(":")[0] for address in addresses] == ["generator", "generator-b"]
    for name in ("generator", "generator-b"):
        env = {key: str(value) for key, value in services[name]["environment"].items()}
        assert env["GENERATOR_HISTORY_URL"] == "redis://redis:6379/0"
        GeneratorSettings.from_env(env)  # a value the generator would refuse fails here
        assert set(env) <= restricted.known_env("generator")
    redis = services["redis"]
    assert redis["read_only"] is True and redis["cap_drop"] == ["ALL"] and redis["user"] != "0"
    assert "--appendonly" in redis["command"] and any(v.endswith(":/data") for v in redis["volumes"])
    assert redis["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]
    # Without the profile's env file: the single generator keeps its history in memory (and its journal).
    default = interpolate(document(), {})["services"]
    assert default["generator"]["environment"]["GENERATOR_HISTORY_URL"] == ""
    assert default["streamer"]["environment"]["STREAMER_GENERATOR_ADDRESS"] == "generator:50051"
