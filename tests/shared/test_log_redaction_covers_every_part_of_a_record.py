"""The shared log filter (``pulsestream.redaction``): message, arguments, extras, traceback, broken formats."""

from __future__ import annotations

import io
import logging

from pulsestream.redaction import BEARER, REDACTED, RedactingFilter, replace_secrets


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    return replace_secrets(BEARER.sub(lambda m: m.group(1) + REDACTED, text), secrets)


def _logged(*records: tuple[str, tuple[object, ...], dict[str, object]]) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s %(note)s"))
    handler.addFilter(RedactingFilter(_scrub, lambda: ["s3cret-value"]))
    log = logging.getLogger("test.shared.redaction")
    log.addHandler(handler)  # it runs before the records propagate to pytest's own capture handlers
    try:
        for message, args, extra in records:
            log.warning(message, *args, extra={"note": "", **extra})
    finally:
        log.removeHandler(handler)
    return stream.getvalue()


def test_secrets_and_bearer_values_are_removed_from_message_arguments_and_extras() -> None:
    text = _logged(
        ("token %s", ("s3cret-value",), {}),
        ("header", (), {"note": "Authorization: Bearer abc.def"}),
    )
    assert "s3cret-value" not in text and "abc.def" not in text
    assert text.count(REDACTED) == 2


def test_a_broken_format_string_is_redacted_not_reported_with_its_arguments() -> None:
    # logging would print the arguments as they are in its "--- Logging error ---" report.
    text = _logged(("%d requests from s3cret-value", ("not a number",), {}))
    assert "s3cret-value" not in text and REDACTED in text
