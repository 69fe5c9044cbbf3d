"""No token reaches a log line: ``access_token=`` values and anything shaped like a JWT are redacted."""

from __future__ import annotations

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pulsestream_streamer.access.redaction import REDACTED, redact

TOKEN = jwt.encode({"sub": "key-0123456789abcdef", "exp": 2_000_000_000}, "x" * 32, algorithm="HS256")
PART = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=10, max_size=60)


@pytest.mark.parametrize(
    "line",
    [
        f'127.0.0.1:5000 - "GET /v1/stream?series=cpu&access_token={TOKEN} HTTP/1.1" 200',
        f"GET /v1/stream?access%5Ftoken={TOKEN}&series=cpu",
        f"GET /v1/stream?ACCESS_TOKEN={TOKEN}",
        f'{{"token": "{TOKEN}", "expiresAt": "2026-01-01T00:00:00Z"}}',
        f"jwt.exceptions.DecodeError: could not decode {TOKEN}",
        f"Authorization: Bearer {TOKEN}",
    ],
)
def test_each_form_a_token_travels_in_is_redacted(line: str) -> None:
    out = redact(line)
    assert TOKEN not in out and TOKEN.split(".")[1] not in out and REDACTED in out


@given(PART, PART, PART)
def test_any_jwt_shaped_string_is_redacted(header: str, payload: str, signature: str) -> None:
    token = f"eyJ{header}.{payload}.{signature}"
    assert token not in redact(f"something {token} happened")


@pytest.mark.parametrize(
    "line",
    [
        "pulsestream_streamer.access.redaction installed",
        "series checkout.latency;service.name=shop and http.server.duration",
        "GET /v1/stream?series=cpu&resolution=1s HTTP/1.1",
        "the eyes.have.it",
    ],
)
def test_dotted_names_are_not_mistaken_for_tokens(line: str) -> None:
    assert redact(line) == line
