"""Durations as people write them in settings: ``10ms``, ``15s``, ``10m``, ``1h``.

A :class:`Duration` is a ``str`` that remembers the text it was written as,
so a settings file renders back exactly as written (the operator contract
says a ``frequency`` of ``250ms`` stays ``250ms``), and knows its length in
seconds for the code that uses it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

#: One or more ``<number><unit>`` parts, e.g. ``1m30s``; units ms, s, m, h.
PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_WHOLE = re.compile(PATTERN)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_seconds(text: str) -> float:
    """Return the length of ``text`` in seconds, or raise ``ValueError``."""
    cleaned = text.strip()
    if not _WHOLE.match(cleaned):
        raise ValueError(f"{text!r} is not a duration; write a number and a unit (ms, s, m, h), e.g. 100ms, 15s, 10m")
    return sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _PART.findall(cleaned))


def format_seconds(seconds: float) -> str:
    """Render seconds in the shortest exact unit (``0.25`` -> ``250ms``)."""
    millis = round(seconds * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis and millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


class Duration(str):
    """A duration that keeps its original text; ``.seconds`` gives its length."""

    seconds: float

    def __new__(cls, text: str | Duration) -> Duration:
        stripped = str(text).strip()
        seconds = parse_seconds(stripped)
        obj = super().__new__(cls, stripped)
        obj.seconds = seconds
        return obj

    @property
    def millis(self) -> int:
        return round(self.seconds * 1000)

    @classmethod
    def _validate(cls, value: Any) -> Duration:
        if isinstance(value, Duration):
            return value
        if isinstance(value, str):
            return cls(value)
        raise ValueError(f"{value!r} is not a duration string such as 100ms or 15s")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": PATTERN}


def within(low: str, high: str) -> Any:
    """A validator that keeps a :class:`Duration` between two bounds (inclusive).

    The bounds also appear in the JSON schema as ``x-duration-minimum`` and
    ``x-duration-maximum`` (the text as written), so the CRD generator can turn
    them into API-server rules without a second copy of the numbers.
    """
    return _Within(low, high, parse_seconds(low), parse_seconds(high))


class _Within:
    """``Annotated`` metadata: range check on validation, bounds in the JSON schema."""

    def __init__(self, low: str, high: str, lo: float, hi: float) -> None:
        self.low, self.high, self.lo, self.hi = low, high, lo, hi

    def _check(self, value: Duration) -> Duration:
        if not self.lo <= value.seconds <= self.hi:
            raise ValueError(f"{value} is out of range; allowed {self.low} .. {self.high}")
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        result = handler(schema)
        result["x-duration-minimum"] = self.low
        result["x-duration-maximum"] = self.high
        return result
