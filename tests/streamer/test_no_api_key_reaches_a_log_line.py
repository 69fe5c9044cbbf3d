"""No API key reaches a log line: query strings, bearer headers, header dumps and known keys are redacted."""

from __future__ import annotations

import io
import logging
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pulsestream_streamer.access.keys import KEY_PATTERN
from pulsestream_streamer.access.redaction import REDACTED, RedactingFilter, redact

from pulsestream.logs import JsonFormatter, TextFormatter

KEYS = st.from_regex(KEY_PATTERN, fullmatch=True).filter(lambda k: len(k) >= 6)
TEXT = st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=40)


@pytest.mark.parametrize(
    "line",
    [
        '127.0.0.1:5000 - "GET /v1/stream?series=cpu&api_key=SECRET123 HTTP/1.1" 200',
        '127.0.0.1:5000 - "GET /v1/stream?api_key=SECRET123&series=cpu HTTP/1.1" 200',
        "GET /v1/series?API_KEY=SECRET123",
        "GET /v1/series?api%5Fkey=SECRET123",
        "GET /v1/series?api_key%3DSECRET123",
        "Authorization: Bearer SECRET123",
        "headers=[(b'authorization', b'Bearer SECRET123'), (b'x-api-key', b'SECRET123')]",
        "{'x-api-key': 'SECRET123'}",
        "X-API-Key: SECRET123",
    ],
)
def test_each_form_a_key_travels_in_is_redacted(line: str) -> None:
    out = redact(line)
    assert "SECRET123" not in out and REDACTED in out


def test_lines_without_keys_are_left_alone() -> None:
    line = '127.0.0.1:5000 - "GET /v1/stream?series=cpu&window=5m HTTP/1.1" 200'
    assert redact(line) == line


def test_known_secrets_are_scrubbed_anywhere() -> None:
    assert redact("debug: token=abcdef-123 in body", ["abcdef-123"]) == "debug: token=<redacted> in body"


@given(key=KEYS, before=TEXT, after=TEXT, encode=st.booleans())
def test_a_key_in_a_query_string_never_survives(key: str, before: str, after: str, encode: bool) -> None:
    value = quote(key, safe="") if encode else key
    assume(key not in before + after and value not in before + after)
    line = f'{before} "GET /v1/stream?x=1&api_key={value}&y=2 HTTP/1.1" {after}'
    out = redact(line)
    assert key not in out and value not in out


@given(key=KEYS, before=TEXT, after=TEXT)
def test_a_key_in_a_bearer_or_api_key_header_never_survives(key: str, before: str, after: str) -> None:
    assume(key not in before + after)
    for line in (f"{before} Authorization: Bearer {key} {after}", f"{before} x-api-key: {key} {after}"):
        assert key not in redact(line)


@pytest.mark.parametrize("formatter", [TextFormatter("streamer"), JsonFormatter()])
def test_the_filter_redacts_args_extras_and_tracebacks_before_formatting(formatter: logging.Formatter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter(lambda: ["known-key-1"]))
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning('%s - "%s %s HTTP/%s"', "127.0.0.1:1", "GET", "/v1/stream?api_key=SECRET123", "1.1")
        log.warning("request", extra={"path": "/v1/series?api_key=SECRET123", "note": "known-key-1"})
        try:
            raise ValueError("bad key known-key-1")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "SECRET123" not in text and "known-key-1" not in text
    assert text.count(REDACTED) >= 4
