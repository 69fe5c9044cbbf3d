"""Typed process settings built once from environment variables.

Each service declares one frozen :class:`EnvSettings` subclass with a
``env_prefix`` (``GENERATOR_``, ``STREAMER_``, ``OPERATOR_``); every field is
one environment variable named ``PREFIX`` + the field name in upper case,
unless the field sets ``json_schema_extra={"env": "NAME"}`` (for shared names
such as ``LOG_LEVEL`` or ``PULSESTREAM_SETTINGS_FILE``). Every field has a
default and a description; the README's settings table is generated from
these classes (``make readme``) and a test fails when they disagree.

A bad value stops the service with one message naming the variable, the
value and what is allowed (:class:`SettingsError`). Values of fields marked
``json_schema_extra={"secret": True}`` are never echoed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot run with."""


class EnvSettings(BaseModel):
    """Base class: frozen, typed, built from the environment by :meth:`from_env`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env_prefix: ClassVar[str] = ""

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets ``field``."""
        info = cls.model_fields[field]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        name = extra.get("env")
        return str(name) if name else f"{cls.env_prefix}{field.upper()}"

    @classmethod
    def is_secret(cls, field: str) -> bool:
        info = cls.model_fields[field]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        return bool(extra.get("secret"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Build the settings from ``environ`` (default ``os.environ``).

        Raises :class:`SettingsError` naming the first bad variable.
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
        messages = []
        for item in error.errors():
            field = str(item["loc"][0]) if item["loc"] else ""
            if field not in cls.model_fields:
                messages.append(item["msg"])
                continue
            name = cls.env_name(field)
            shown = "<hidden>" if cls.is_secret(field) else repr(env.get(name, ""))
            allowed = cls.model_fields[field].description or ""
            messages.append(f"{name}={shown} is invalid: {item['msg']} (expected: {allowed})")
        return "; ".join(messages)

    @classmethod
    def documented_fields(cls) -> list[tuple[str, str, str]]:
        """``(variable, default, description)`` rows for the README's settings table."""
        rows = []
        for field, info in cls.model_fields.items():
            rows.append((cls.env_name(field), _default_text(info), info.description or ""))
        return rows


def _default_text(info: FieldInfo) -> str:
    default = info.get_default(call_default_factory=True)
    if default is None:
        return ""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, (list, tuple)):
        return ",".join(str(item) for item in default)
    return str(default)
