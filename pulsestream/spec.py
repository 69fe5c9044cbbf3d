"""The live settings model: the ``spec`` of a ``StreamConfig``.

One model serves three readers: the generator and the streamer validate the
live settings file (``PULSESTREAM_SETTINGS_FILE``) with it, the operator
renders it into the ConfigMap, and the CRD's ``openAPIV3Schema`` is generated
from it (``make crd``; a test fails on drift). Field names are camelCase on
the wire, as Kubernetes objects are.

Each live setting is declared here once: its type, bounds, default and
description. The services' environment models derive their ``GENERATOR_*`` /
``STREAMER_*`` fields from these (:mod:`pulsestream.liveenv`), and the rules
that relate values to each other (:mod:`pulsestream.specrules`) are the
model's own validator, so no reader of the settings can accept a spec another
refuses.

An invalid file is rejected as a whole: :func:`load_spec` either returns a
complete, valid :class:`StreamSpec` or raises :class:`SpecError` with every
problem listed, so a service can keep its last good settings. An empty
document (an empty file, or only comments) is invalid too: it is what a
truncated write looks like, and ``{}`` says "all defaults" on purpose.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Annotated, Any, Self

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from pulsestream import specrules
from pulsestream.durations import Duration, within
from pulsestream.resolutions import RESOLUTIONS
from pulsestream.specrules import Problem, RulesBroken

__all__ = [
    "DEFAULT_SERIES",
    "INVALID_SPEC",
    "RESOLUTIONS",
    "SERIES_NAME_PATTERN",
    "Problem",
    "RateLimit",
    "SeriesName",
    "SpecError",
    "StreamSpec",
    "field_at",
    "load_spec",
    "parse_spec",
]

#: Series names: lowercase, start with a letter, safe in URLs and Prometheus labels.
SERIES_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"

#: One series name (the type of the items of ``series``).
SeriesName = Annotated[str, Field(pattern=SERIES_NAME_PATTERN)]

DEFAULT_SERIES = ("cpu", "memory", "requests", "latency")

#: The reason of a refusal for values that are bad on their own (not a cross-field rule).
INVALID_SPEC = "InvalidSpec"


class SpecError(ValueError):
    """The settings document is not a valid spec; ``str()`` lists every problem.

    :attr:`problems` says why in a form code can match: one ``InvalidSpec``
    problem listing each bad value (``field: message``), or one problem per
    broken cross-field rule, each with the rule's reason.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(problem.message for problem in self.problems))

    @classmethod
    def invalid(cls, message: str) -> SpecError:
        """A document whose values (or shape) are bad on their own."""
        return cls([Problem(INVALID_SPEC, message)])

    @property
    def reason(self) -> str:
        """The first problem's reason: what a ``Ready=False`` condition reports."""
        return self.problems[0].reason


def _unique(names: list[str]) -> list[str]:
    dupes = sorted({name for name in names if names.count(name) > 1})
    if dupes:
        raise ValueError(f"series names must be unique; repeated: {', '.join(dupes)}")
    return names


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, alias_generator=None)


class RateLimit(_Model):
    """Per-client limits the streamer enforces (client = API key, else address)."""

    requests_per_second: float = Field(
        default=5.0,
        alias="requestsPerSecond",
        gt=0,
        le=100_000,
        description="Sustained HTTP requests per second per client (token bucket refill rate).",
    )
    burst: int = Field(
        default=10,
        ge=1,
        le=1_000_000,
        description="Requests a client may make at once before the rate applies (bucket size).",
    )
    max_streams_per_client: int = Field(
        default=4,
        alias="maxStreamsPerClient",
        ge=1,
        le=10_000,
        description="Concurrent SSE streams one client may hold open.",
    )


class StreamSpec(_Model):
    """Live-tunable settings shared by generator and streamer."""

    frequency: Annotated[Duration, within("10ms", "1h")] = Field(
        default=Duration("100ms"),
        description="Generator update period of raw points (10ms .. 1h).",
    )
    buffer_size: int = Field(
        default=1024,
        alias="bufferSize",
        ge=1,
        le=1_000_000,
        description="Per-subscriber buffer in the generator and per-client queue in the streamer, in messages.",
    )
    flush_interval: Annotated[Duration, within("0ms", "10s")] = Field(
        default=Duration("50ms"),
        alias="flushInterval",
        description="Streamer batching window: points arriving within it go out as one SSE event (0ms .. 10s).",
    )
    heartbeat_interval: Annotated[Duration, within("1s", "10m")] = Field(
        default=Duration("15s"),
        alias="heartbeatInterval",
        description="Idle time after which the streamer sends an SSE heartbeat comment (1s .. 10m).",
    )
    retention: Annotated[Duration, within("1s", "24h")] = Field(
        default=Duration("10m"),
        description="History the generator keeps for replay and resume (1s .. 24h).",
    )
    # Uniqueness is part of the type, not a model method, so an environment field derived from this one checks it too.
    series: Annotated[list[SeriesName], AfterValidator(_unique)] = Field(
        default_factory=lambda: list(DEFAULT_SERIES),
        min_length=1,
        max_length=64,
        description="Series the generator produces.",
    )
    rate_limit: RateLimit = Field(
        default_factory=RateLimit,
        alias="rateLimit",
        description="Per-client limits of the streamer.",
    )
    target: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="Operator only: the release whose pods this spec drives. Services ignore it.",
    )

    @model_validator(mode="after")
    def _obey_the_rules(self) -> Self:
        """The cross-field rules (:data:`pulsestream.specrules.RULES`), once every value is valid on its own."""
        problems = specrules.broken(self)
        if problems:
            raise RulesBroken(problems)
        return self

    def to_document(self) -> dict[str, Any]:
        """The spec as it appears in a settings file or a ``StreamConfig`` (camelCase)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def version(self) -> str:
        """A short, stable hash of the settings; ``/health`` reports it as the config version."""
        canonical = json.dumps(self.to_document(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def field_at(path: str) -> FieldInfo:
    """The model field of a spec path written as in a document: ``bufferSize``, ``rateLimit.burst``."""
    model: type[BaseModel] = StreamSpec
    *parents, last = path.split(".")
    for part in parents:
        nested = _field_named(model, part).annotation
        if not (isinstance(nested, type) and issubclass(nested, BaseModel)):
            raise KeyError(f"{path}: {part} is not an object")
        model = nested
    return _field_named(model, last)


def _field_named(model: type[BaseModel], key: str) -> FieldInfo:
    for name, info in model.model_fields.items():
        if key in (info.alias, name):
            return info
    raise KeyError(f"no spec field {key!r}")


def _error(error: ValidationError) -> SpecError:
    for item in error.errors():
        cause = (item.get("ctx") or {}).get("error")
        if isinstance(cause, RulesBroken):  # every value was valid: only the rules ran and failed
            return SpecError(cause.problems)
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(document)"
        problems.append(f"{where}: {item['msg']}")
    return SpecError.invalid("; ".join(problems))


def parse_spec(document: Any) -> StreamSpec:
    """Validate an already-parsed document (a mapping) into a :class:`StreamSpec`."""
    if not isinstance(document, dict):
        raise SpecError.invalid(f"settings must be a mapping, not {type(document).__name__}")
    try:
        return StreamSpec.model_validate(document)
    except ValidationError as error:
        raise _error(error) from error


def _overlay(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


#: libyaml's safe loader when PyYAML was built with it (about 20x faster on large files), else the pure-Python one.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_spec(text: str | bytes, base: StreamSpec | None = None) -> StreamSpec:
    """Parse a JSON or YAML settings document (YAML is a superset of JSON).

    Keys the document leaves out take their value from ``base`` (the service's
    environment-derived settings), else the model's defaults. An empty
    document (no text, whitespace or comments only) is refused: ``{}`` asks
    for the defaults, an empty file is more likely a write cut short.
    """
    try:
        document = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as error:
        raise SpecError.invalid(f"not valid YAML or JSON: {error}") from error
    if document is None:
        raise SpecError.invalid(
            "the document is empty (no settings, only whitespace or comments); write {} for the defaults"
        )
    if base is not None and isinstance(document, dict):
        document = _overlay(base.to_document(), document)
    return parse_spec(document)
