"""The one JSON shape of every error the HTTP layer answers: ``{"error": {"code", "message", ...}}``."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

__all__ = ["bad_parameter", "problem"]


def problem(status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An error answer: ``status`` with ``{"error": {"code": code, "message": message, **extra}}``."""
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status_code=status, headers=headers)


def bad_parameter(parameter: str, message: str) -> JSONResponse:
    """``400`` naming the query parameter that is wrong."""
    return problem(400, "bad_parameter", message, parameter=parameter)
