"""docker-compose.yml: valid per the Compose specification, health-gated, tunable by ${VAR:-default}, hardened."""

from __future__ import annotations

import re
from typing import Any

import pytest
import restricted
import yaml
from deploy_support import ROOT, run, tool

from pulsestream.durations import Duration
from pulsestream.spec import load_spec

COMPOSE = ROOT / "docker-compose.yml"
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def interpolate(value: Any, environ: dict[str, str]) -> Any:
    """Compose's ``${VAR}`` / ``${VAR:-default}`` substitution (unset or empty takes the default)."""
    if isinstance(value, str):
        return VARIABLE.sub(lambda m: environ.get(m["name"]) or (m["default"] or ""), value)
    if isinstance(value, dict):
        return {key: interpolate(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environ) for item in value]
    return value


def test_compose_file_is_valid_against_the_compose_specification_schema() -> None:
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_compose_file_is_refused_by_the_same_check(tmp_path: Any) -> None:
    broken = document()
    broken["services"]["streamer"]["depends_on"]["generator"]["condition"] = "service_ready"
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)])
    assert result.returncode != 0


def test_services_have_healthchecks_and_the_streamer_waits_for_a_healthy_generator() -> None:
    services = document()["services"]
    assert {"generator", "streamer"} <= set(services)
    assert "operator" not in services, "compose is the operator-free path: the settings file is edited by hand"
    for name in ("generator", "streamer"):
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD" and check["interval"] and check["retries"] >= 1
    assert "grpc_health" in " ".join(services["generator"]["healthcheck"]["test"])
    assert "/health" in " ".join(services["streamer"]["healthcheck"]["test"])
    assert services["streamer"]["depends_on"] == {"generator": {"condition": "service_healthy"}}


def test_variables_have_defaults_and_override_ports_frequency_buffers_log_level_and_keys() -> None:
    raw = COMPOSE.read_text()
    names = {m["name"] for m in VARIABLE.finditer(raw)}
    undefaulted = {m["name"] for m in VARIABLE.finditer(raw) if m["default"] is None}
    assert not undefaulted, f"every variable needs a default: {undefaulted}"
    for expected in (
        "STREAMER_PUBLISHED_PORT",
        "GENERATOR_PUBLISHED_PORT",
        "GENERATOR_FREQUENCY",
        "GENERATOR_BUFFER_SIZE",
        "STREAMER_BUFFER_SIZE",
        "LOG_LEVEL",
        "STREAMER_API_KEYS",
    ):
        assert expected in names

    defaults = interpolate(document(), {})
    services = defaults["services"]
    assert "8080:8080" in services["streamer"]["ports"]
    assert "50051:50051" in services["generator"]["ports"]
    assert services["generator"]["environment"]["GENERATOR_FREQUENCY"] == "100ms"
    assert services["streamer"]["environment"]["STREAMER_API_KEYS"] == "", "open by default, like make run"

    tuned = interpolate(
        document(), {"STREAMER_PUBLISHED_PORT": "9090", "GENERATOR_FREQUENCY": "250ms", "LOG_LEVEL": "debug"}
    )["services"]
    assert "9090:8080" in tuned["streamer"]["ports"]
    assert tuned["generator"]["environment"]["GENERATOR_FREQUENCY"] == "250ms"
    assert tuned["streamer"]["environment"]["LOG_LEVEL"] == "debug"


@pytest.mark.parametrize("service", ["generator", "streamer"])
def test_every_environment_variable_is_read_by_the_service_and_its_default_is_valid(service: str) -> None:
    environment = interpolate(document(), {})["services"][service]["environment"]
    unknown = set(environment) - restricted.known_env(service)
    assert not unknown, f"{service} reads no setting named {unknown}"
    settings = restricted.SETTINGS_BY_CONTAINER[service]
    settings.from_env({k: str(v) for k, v in environment.items()})  # raises on a value the service refuses
    assert environment[f"{service.upper()}_HOST"] == "0.0.0.0"


def test_the_streamer_dials_the_generator_by_its_compose_service_name() -> None:
    services = interpolate(document(), {})["services"]
    host, port = services["streamer"]["environment"]["STREAMER_GENERATOR_ADDRESS"].split(":")
    assert host in services
    assert port == services[host]["environment"]["GENERATOR_PORT"]


def test_the_live_settings_file_is_bind_mounted_as_a_directory_and_valid() -> None:
    services = interpolate(document(), {})["services"]
    for name in ("generator", "streamer"):
        service = services[name]
        settings_file = service["environment"]["PULSESTREAM_SETTINGS_FILE"]
        # The settings directory (the generator also mounts its ingest journal's volume).
        (volume,) = [volume for volume in service["volumes"] if volume.startswith("./")]
        source, target, mode = volume.split(":")
        # The directory, not the file: editors save by rename, which a single-file bind mount never sees.
        assert settings_file.startswith(target + "/") and mode == "ro"
        host_file = ROOT / source / settings_file.removeprefix(target + "/")
        load_spec(host_file.read_text())  # parses with the services' own model


def test_containers_run_hardened_on_one_named_network() -> None:
    compose = document()
    assert list(compose["networks"]) == ["pulsestream"]
    for name in ("generator", "streamer"):
        service = interpolate(compose, {})["services"][name]
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert service["networks"] == ["pulsestream"]
        assert service["build"]["context"] == "." and (ROOT / service["build"]["dockerfile"]).is_file()


def test_tracing_backend_is_under_the_tracing_profile_and_services_can_point_at_it() -> None:
    services = interpolate(document(), {})["services"]
    backends = [name for name, service in services.items() if "tracing" in service.get("profiles", [])]
    assert backends, "a tracing backend under the `tracing` profile"
    (backend,) = backends
    assert not services["generator"].get("profiles"), "the core stack runs without any profile"
    for name in ("generator", "streamer"):
        env = services[name]["environment"]
        assert env["OTEL_TRACES_EXPORTER"] == "none", "tracing is opt-in"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith(f"http://{backend}:4317")
        assert env["OTEL_SERVICE_NAME"] == f"pulsestream-{name}"
    on = interpolate(document(), {"OTEL_TRACES_EXPORTER": "otlp"})["services"]
    assert on["streamer"]["environment"]["OTEL_TRACES_EXPORTER"] == "otlp"


@pytest.mark.parametrize("service", ["generator", "streamer"])
def test_docker_waits_longer_than_the_service_drains_before_killing_it(service: str) -> None:
    compose = interpolate(document(), {})["services"][service]
    settings = restricted.SETTINGS_BY_CONTAINER[service]
    drain_env = restricted.DRAIN_ENV[service]
    drain = settings.from_env({k: str(v) for k, v in compose["environment"].items()})
    field = next(f for f in settings.model_fields if settings.env_name(f) == drain_env)
    assert Duration(compose["stop_grace_period"]).seconds > getattr(drain, field).seconds
