"""Every environment variable of every service is read, and a bad value stops the service with a clear message.

The cases are derived from each settings model's JSON schema (type, range, choices, duration bounds), so a
new field is covered the moment it is declared; fields whose valid values a schema cannot describe (host:port
lists, key lists, name patterns) take their examples from ``EXAMPLES``, and a pattern-constrained field
without one fails the test rather than going untested.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pulsestream_generator.settings import GeneratorSettings
from pulsestream_operator.settings import OperatorSettings
from pulsestream_streamer.settings import StreamerSettings
from pydantic import BaseModel
from services import run_to_exit

from pulsestream.durations import format_seconds, parse_seconds
from pulsestream.envsettings import EnvSettings, SettingsError, split_list
from pulsestream.liveenv import LiveEnvSettings, live
from pulsestream.spec import StreamSpec, field_at

MODELS: tuple[type[EnvSettings], ...] = (GeneratorSettings, StreamerSettings, OperatorSettings)


@dataclass(frozen=True)
class Example:
    """A valid non-default text, invalid texts, and variables that must be set alongside."""

    valid: str
    invalid: tuple[str, ...] = ()
    alongside: dict[str, str] = field(default_factory=dict)


#: Fields whose valid values the JSON schema does not spell out.
EXAMPLES: dict[str, Example] = {
    "GENERATOR_SERIES": Example("alpha,beta_2", ("Bad Name", "cpu,cpu")),
    "STREAMER_SERIES": Example("alpha,beta_2", ("Bad Name", "cpu,cpu")),
    "GENERATOR_TLS_CERT_FILE": Example("/tls/tls.crt", alongside={"GENERATOR_TLS_KEY_FILE": "/tls/tls.key"}),
    "GENERATOR_TLS_KEY_FILE": Example("/tls/tls.key", alongside={"GENERATOR_TLS_CERT_FILE": "/tls/tls.crt"}),
    "GENERATOR_TLS_CLIENT_CA_FILE": Example(
        "/tls/ca.crt", alongside={"GENERATOR_TLS_CERT_FILE": "/tls/tls.crt", "GENERATOR_TLS_KEY_FILE": "/tls/tls.key"}
    ),
    "GENERATOR_INGEST_TOKENS": Example("t1-abc,t2_def=", ("has space,t2",)),
    "GENERATOR_INGEST_OTLP_RESOURCE_ATTRIBUTES": Example("service.name,host.name"),
    "GENERATOR_HISTORY_URL": Example("rediss://:pw@redis.example:6380/2", ("http://redis:6379", "redis.example")),
    "GENERATOR_PUBLISHED": Example(
        '[{"name": "orders", "unit": "1/s", "expectedRange": [0.0, 50.0]}]',
        ('[{"name": "a b"}]', "[not json", '[{"name": "x", "expectedRange": [5, 1]}]'),
    ),
    "STREAMER_GENERATOR_ADDRESS": Example("10.0.0.1:50051,gen-1:50051", ("no-port", "host:http")),
    "STREAMER_API_KEYS": Example("k1-abc,k2_def=", ("has space,k2",)),
    "STREAMER_CORS_ALLOWED_ORIGINS": Example("https://a.example,http://localhost:3000", ("a.example",)),
    "STREAMER_TRUSTED_PROXIES": Example("10.0.0.0/8,fd00::/8", ("10.0.0.300",)),
    "STREAMER_TOKEN_MAX_TTL": Example("1h", ("soon", "48h")),
    "STREAMER_JWT_JWKS_URL": Example(
        "https://idp.example/certs",
        ("http://idp.example/certs", "ftp://idp.example/certs"),
        alongside={"STREAMER_JWT_ISSUER": "https://idp.example", "STREAMER_JWT_AUDIENCE": "pulsestream"},
    ),
    "OPERATOR_CONFIGMAP_NAME": Example("{name}-live", ("Bad_Name", "{nope}-x")),
    "OPERATOR_SETTINGS_KEY": Example("live.json", ("a/b",)),
    "OPERATOR_ROLL_ON": Example("frequency,series", ("colour",)),
    "OPERATOR_NAMESPACES": Example("team-a,team-b"),
}


@dataclass(frozen=True)
class Case:
    model: type[EnvSettings]
    field: str
    variable: str
    valid: str
    invalid: tuple[str, ...]
    alongside: dict[str, str]

    def __str__(self) -> str:
        return self.variable


def _text(value: Any) -> str:
    """A settings value as it is written in the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], BaseModel):  # a list of objects: JSON
        return json.dumps([item.model_dump(mode="json", by_alias=True, exclude_defaults=True) for item in value])
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def _number_case(schema: dict[str, Any], default: Any, integer: bool) -> tuple[str, tuple[str, ...]]:
    low = schema.get("minimum", schema.get("exclusiveMinimum", -math.inf))
    high = schema.get("maximum", schema.get("exclusiveMaximum", math.inf))
    step = 1 if integer else 0.5
    valid = default + step if default + step < high or default + step == schema.get("maximum") else default - step
    invalid = ["twelve"]
    if "maximum" in schema:
        invalid.append(str(schema["maximum"] + step))
    if "exclusiveMaximum" in schema:
        invalid.append(str(schema["exclusiveMaximum"]))
    if "minimum" in schema:
        invalid.append(str(schema["minimum"] - step))
    if "exclusiveMinimum" in schema:
        invalid.append(str(schema["exclusiveMinimum"]))
    assert low <= valid <= high
    return str(valid), tuple(invalid)


def _duration_case(schema: dict[str, Any], default: str) -> tuple[str, tuple[str, ...]]:
    low = parse_seconds(schema["x-duration-minimum"])
    high = parse_seconds(schema["x-duration-maximum"])
    candidates = ("250ms", "2s", "45s", "3m", "100ms", "20ms", "1h")
    valid = next(
        c for c in candidates if low <= parse_seconds(c) <= high and parse_seconds(c) != parse_seconds(default)
    )
    invalid = ["soon", format_seconds(high * 2 + 1)]
    if low > 0:
        invalid.append("0ms")
    return valid, tuple(invalid)


def _derive(model: type[EnvSettings], name: str) -> Case:
    variable = model.env_name(name)
    info = model.model_fields[name]
    default = info.get_default(call_default_factory=True)
    example = EXAMPLES.get(variable)
    if example is not None:
        return Case(model, name, variable, example.valid, example.invalid, example.alongside)
    schema = model.model_json_schema()["properties"][name]
    kind = schema.get("type")
    if "enum" in schema:
        valid = next(choice for choice in schema["enum"] if choice != default)
        return Case(model, name, variable, str(valid), ("nonsense",), {})
    if kind == "boolean":
        return Case(model, name, variable, _text(not default), ("maybe",), {})
    if kind in ("integer", "number"):
        valid, invalid = _number_case(schema, default, kind == "integer")
        return Case(model, name, variable, valid, invalid, {})
    if kind == "string" and "x-duration-minimum" in schema:
        valid, invalid = _duration_case(schema, str(default))
        return Case(model, name, variable, valid, invalid, {})
    if kind == "string" and "pattern" not in schema:
        return Case(model, name, variable, "some-value", (), {})  # free text: nothing is invalid
    raise AssertionError(f"{variable}: add an example to EXAMPLES (its schema {schema} allows no derived value)")


def _cases() -> Iterator[Case]:
    for model in MODELS:
        for name in model.model_fields:
            yield _derive(model, name)


CASES = list(_cases())
INVALID = [(case, bad) for case in CASES for bad in case.invalid]


def test_every_field_of_every_service_has_a_case() -> None:
    variables = {case.variable for case in CASES}
    for model in MODELS:
        assert {model.env_name(name) for name in model.model_fields} <= variables


def test_the_defaults_start_without_any_environment() -> None:
    for model in MODELS:
        model.from_env({})


@pytest.mark.parametrize("case", CASES, ids=str)
def test_each_variable_is_read_and_its_value_round_trips(case: Case) -> None:
    default = case.model.from_env({})
    settings = case.model.from_env({case.variable: case.valid, **case.alongside})
    value = getattr(settings, case.field)
    assert _text(value) != _text(getattr(default, case.field)), f"{case.variable} was not read"
    assert _text(value) == case.valid or float(_text(value)) == float(case.valid)


@pytest.mark.parametrize(("case", "bad"), INVALID, ids=[f"{c.variable}={b}" for c, b in INVALID])
def test_a_bad_value_names_the_variable_the_value_and_what_is_allowed(case: Case, bad: str) -> None:
    with pytest.raises(SettingsError) as caught:
        case.model.from_env({case.variable: bad, **case.alongside})
    message = str(caught.value)
    assert case.variable in message
    if case.model.is_secret(case.field):
        assert bad not in message and "<hidden>" in message
    else:
        assert repr(bad) in message
    description = case.model.model_fields[case.field].description or ""
    assert f"expected: {description}" in message
    assert "\n" not in message


def test_a_secret_value_is_never_echoed() -> None:
    secrets = [case for case in CASES if case.model.is_secret(case.field)]
    assert "STREAMER_API_KEYS" in {case.variable for case in secrets}


def test_cors_refuses_a_wildcard_origin_together_with_credentials() -> None:
    env = {"STREAMER_CORS_ALLOWED_ORIGINS": "*", "STREAMER_CORS_ALLOW_CREDENTIALS": "true"}
    with pytest.raises(SettingsError, match=r"STREAMER_CORS_ALLOW_CREDENTIALS='true' is invalid.*wildcard"):
        StreamerSettings.from_env(env)
    assert StreamerSettings.from_env({**env, "STREAMER_CORS_ALLOW_CREDENTIALS": "false"}).cors_allowed_origins == ["*"]
    explicit = {**env, "STREAMER_CORS_ALLOWED_ORIGINS": "https://dash.example"}
    assert StreamerSettings.from_env(explicit).cors_allow_credentials


def test_the_rate_limit_variables_are_the_base_of_the_live_settings() -> None:
    env = {"STREAMER_RATE_LIMIT_REQUESTS_PER_SECOND": "2.5", "STREAMER_RATE_LIMIT_BURST": "3"}
    limits = StreamerSettings.from_env({**env, "STREAMER_MAX_STREAMS_PER_CLIENT": "2"}).base_spec().rate_limit
    assert (limits.requests_per_second, limits.burst, limits.max_streams_per_client) == (2.5, 3, 2)


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        ("pulsestream-streamer", "STREAMER_PORT", "eighty"),
        ("pulsestream-generator", "GENERATOR_PORT", "99999"),
    ],
)
def test_a_service_with_a_bad_value_exits_non_zero_with_one_clear_line(command: str, variable: str, value: str) -> None:
    result = run_to_exit(command, {variable: value})
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0] and repr(value) in lines[0]


@pytest.mark.parametrize(
    ("command", "env", "named"),
    [
        ("pulsestream-streamer", {"STREAMER_SERIES": "cpu,cpu"}, ["STREAMER_SERIES='cpu,cpu'"]),
        (
            "pulsestream-generator",
            {"GENERATOR_FREQUENCY": "10ms", "GENERATOR_RETENTION": "24h"},
            ["GENERATOR_FREQUENCY='10ms'", "GENERATOR_RETENTION='24h'", "HistoryTooLarge"],
        ),
        (
            "pulsestream-streamer",
            {"STREAMER_FLUSH_INTERVAL": "5s", "STREAMER_HEARTBEAT_INTERVAL": "5s"},
            ["STREAMER_FLUSH_INTERVAL='5s'", "STREAMER_HEARTBEAT_INTERVAL='5s'", "FlushNotBelowHeartbeat"],
        ),
    ],
    ids=["repeated-series", "history-too-large", "flush-not-below-heartbeat"],
)
def test_live_defaults_the_spec_refuses_stop_the_service_with_exit_2_and_one_line(
    command: str, env: dict[str, str], named: list[str]
) -> None:
    result = run_to_exit(command, env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{command}: ")
    for text in named:
        assert text in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("model", "env", "reason", "variables"),
    [
        (GeneratorSettings, {"GENERATOR_FREQUENCY": "2m"}, "FrequencyTooSlow", 1),
        (GeneratorSettings, {"GENERATOR_FREQUENCY": "30s", "GENERATOR_RETENTION": "10s"}, "RetentionBelowFrequency", 2),
        (StreamerSettings, {"STREAMER_RATE_LIMIT_REQUESTS_PER_SECOND": "20"}, "BurstBelowRate", 2),
    ],
)
def test_a_combination_the_spec_rules_refuse_names_its_reason_and_every_variable_involved(
    model: type[EnvSettings], env: dict[str, str], reason: str, variables: int
) -> None:
    with pytest.raises(SettingsError) as caught:
        model.from_env(env)
    message = str(caught.value)
    assert f"({reason})" in message and "\n" not in message
    assert message.count(model.env_prefix) == variables, message
    for name, value in env.items():
        assert f"{name}={value!r}" in message


def test_a_variable_left_unset_is_named_with_its_default_when_its_value_takes_part() -> None:
    with pytest.raises(SettingsError, match=r"STREAMER_RATE_LIMIT_BURST \(default '10'\)"):
        StreamerSettings.from_env({"STREAMER_RATE_LIMIT_REQUESTS_PER_SECOND": "20"})


def test_the_live_variables_take_their_bounds_and_defaults_from_the_spec() -> None:
    for model in (GeneratorSettings, StreamerSettings):
        for name, path in model.live_fields().items():
            spec_field = field_at(path)
            info = model.model_fields[name]
            assert info.annotation == spec_field.annotation, name
            assert info.metadata == spec_field.metadata, name
            assert info.get_default(call_default_factory=True) == spec_field.get_default(call_default_factory=True)
            assert (info.description or "").endswith(f"(live: {path}).")
    assert model.from_env({}).base_spec() == StreamSpec()


def test_a_live_field_declared_with_another_type_than_the_spec_is_refused_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match="live setting frequency"):

        class Wrong(LiveEnvSettings):
            frequency: int = live("frequency")


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
@pytest.mark.parametrize("level", ["WARNING", "Debug", "info", " ERROR "])
def test_log_level_is_read_in_any_case(model: type[EnvSettings], level: str) -> None:
    assert model.from_env({"LOG_LEVEL": level}).log_level == level.strip().lower()


def test_a_service_accepts_log_level_as_python_spells_it() -> None:
    result = run_to_exit("pulsestream-generator", {"LOG_LEVEL": "WARNING", "GENERATOR_PORT": "99999"})
    # The port is refused, so the process stops at once: LOG_LEVEL=WARNING was not the complaint.
    assert result.returncode == 2 and "GENERATOR_PORT" in result.stderr and "LOG_LEVEL" not in result.stderr


def test_every_service_reads_lists_from_comma_separated_text_the_same_way() -> None:
    assert split_list(" a, b,,c ,") == ["a", "b", "c"]
    assert OperatorSettings.from_env({"OPERATOR_NAMESPACES": "a, b,"}).namespace_list == ["a", "b"]
    assert StreamerSettings.from_env({"STREAMER_GENERATOR_ADDRESS": "a:1, b:2"}).generator_address == ["a:1", "b:2"]
    assert GeneratorSettings.from_env({"GENERATOR_SERIES": "x, y"}).base_spec().series == ["x", "y"]
