"""Typed process settings built once from environment variables.

Each service declares one frozen :class:`EnvSettings` subclass with a
``env_prefix`` (``GENERATOR_``, ``STREAMER_``, ``OPERATOR_``); every field is
one environment variable named ``PREFIX`` + the field name in upper case,
unless the field sets ``json_schema_extra={"env": "NAME"}`` (for shared names
such as ``LOG_LEVEL`` or ``PULSESTREAM_SETTINGS_FILE``). Every field has a
default and a description; the README's settings table is generated from
these classes (``make readme``) and a test fails when they disagree.

What every service shares is declared here once: ``LOG_LEVEL`` and
``LOG_FORMAT``, and the reading of list fields from comma-separated text.
Services that follow the live settings file build on
:class:`pulsestream.liveenv.LiveEnvSettings`.

A bad value stops the service with one message naming the variable, the
value and what is allowed (:class:`SettingsError`); values that are fine
alone but not together name every variable involved (:class:`Conflict`).
Values of fields marked ``json_schema_extra={"secret": True}`` are never
echoed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Self, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo

#: Log levels by their documented names; any case is accepted (``WARNING``, as Python spells it).
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot run with."""


class Conflict(ValueError):
    """Raised by a model validator: values each valid alone that do not go together.

    Each entry of ``conflicts`` is ``(fields, reason, message)``: the model
    fields involved, a CamelCase reason and what is wrong. :meth:`EnvSettings.from_env`
    names the variables of those fields in its :class:`SettingsError`.
    """

    def __init__(self, conflicts: Sequence[tuple[Sequence[str], str, str]]) -> None:
        self.conflicts = tuple((tuple(fields), reason, message) for fields, reason, message in conflicts)
        super().__init__("; ".join(message for _, _, message in self.conflicts))


def split_list(text: str) -> list[str]:
    """Comma-separated text to its items, blanks dropped: ``"a, b,,"`` -> ``["a", "b"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


class EnvSettings(BaseModel):
    """Base class: frozen, typed, built from the environment by :meth:`from_env`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env_prefix: ClassVar[str] = ""
    #: Fields every service declares through this base, listed after the service's own in the README.
    shared_fields: ClassVar[tuple[str, ...]] = ("log_level", "log_format")

    log_level: LogLevel = Field(
        default="info",
        description="Log level: debug, info, warning, error or critical, in any case (WARNING, as Python spells "
        "it, works too).",
        json_schema_extra={"env": "LOG_LEVEL"},
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log line format: text for people, json for log collectors.",
        json_schema_extra={"env": "LOG_FORMAT"},
    )

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("*", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any, info: ValidationInfo) -> Any:
        """Environment variables are text: a list field takes comma-separated items, or a JSON array.

        JSON is how a list of objects (``GENERATOR_PUBLISHED='[{"name": "orders", "unit": "1/s"}]'``) is
        written; a value that starts with ``[`` is read as JSON for any list field.
        """
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, str) and field is not None and get_origin(field.annotation) is list:
            if value.lstrip().startswith("["):
                try:
                    return json.loads(value)
                except json.JSONDecodeError as error:
                    raise ValueError(f"not a JSON array: {error}") from None
            return split_list(value)
        return value

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets ``field``."""
        name = field_extra(cls.model_fields[field]).get("env")
        return str(name) if name else f"{cls.env_prefix}{field.upper()}"

    @classmethod
    def is_secret(cls, field: str) -> bool:
        return bool(field_extra(cls.model_fields[field]).get("secret"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Build the settings from ``environ`` (default ``os.environ``).

        Raises :class:`SettingsError` naming the bad variables.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in cls.model_fields:
            name = cls.env_name(field)
            if name in env:
                values[field] = env[name]
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise SettingsError(cls._explain(error, env)) from None

    @classmethod
    def from_env_or_exit(cls, program: str) -> Self:
        """:meth:`from_env` for an entry point: a bad value prints one line and exits with status 2."""
        try:
            return cls.from_env()
        except SettingsError as error:
            print(f"{program}: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    @classmethod
    def _explain(cls, error: ValidationError, env: Mapping[str, str]) -> str:
        messages: list[str] = []
        for item in error.errors():
            cause = (item.get("ctx") or {}).get("error")
            if isinstance(cause, Conflict):
                messages.extend(
                    cls._explain_conflict(fields, reason, text, env) for fields, reason, text in cause.conflicts
                )
                continue
            field = str(item["loc"][0]) if item["loc"] else ""
            if field not in cls.model_fields:
                messages.append(item["msg"])
                continue
            allowed = cls.model_fields[field].description or ""
            messages.append(f"{cls._shown(field, env)} is invalid: {item['msg']} (expected: {allowed})")
        return "; ".join(messages)

    @classmethod
    def _explain_conflict(cls, fields: Sequence[str], reason: str, message: str, env: Mapping[str, str]) -> str:
        named = [cls._shown(field, env) for field in fields if field in cls.model_fields]
        if not named:
            return f"{message} ({reason})"
        if len(named) == 1:
            return f"{named[0]} is invalid ({reason}): {message}"
        return f"{', '.join(named[:-1])} and {named[-1]} do not go together ({reason}): {message}"

    @classmethod
    def _shown(cls, field: str, env: Mapping[str, str]) -> str:
        """``NAME='value'`` as set (secrets hidden), or ``NAME (default 'x')`` when unset."""
        name = cls.env_name(field)
        if name not in env:
            return f"{name} (default {_default_text(cls.model_fields[field])!r})"
        return f"{name}={'<hidden>' if cls.is_secret(field) else repr(env[name])}"

    @classmethod
    def documented_fields(cls) -> list[tuple[str, str, str]]:
        """``(variable, default, description)`` rows for the README's settings table.

        The service's own fields in declaration order, then the shared ones.
        """
        fields = [name for name in cls.model_fields if name not in cls.shared_fields]
        fields += [name for name in cls.shared_fields if name in cls.model_fields]
        return [
            (cls.env_name(name), _default_text(cls.model_fields[name]), cls.model_fields[name].description or "")
            for name in fields
        ]


def field_extra(info: FieldInfo) -> dict[str, Any]:
    """A field's ``json_schema_extra`` as a dict (empty when it has none)."""
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}


def _default_text(info: FieldInfo) -> str:
    default = info.get_default(call_default_factory=True)
    if default is None:
        return ""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, (list, tuple)):
        return ",".join(str(item) for item in default)
    return str(default)
