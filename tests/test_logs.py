"""Log lines carry the request id and never a token, password or secret."""

from __future__ import annotations

import logging

import pytest

from zerospeech_api.logs import ContextFilter, RedactingFormatter, redact, request_id_var

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MX0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        (f"Authorization: Bearer {JWT}", JWT),
        (f"token in query ?access={JWT}", JWT),
        ("password=hunter2hunter2&username=bob", "hunter2hunter2"),
        ('{"secret": "abcdefabcdef"}', "abcdefabcdef"),
        ("postgresql+psycopg://zr:s3cr3tpass@db/zr", "s3cr3tpass"),
    ],
)
def test_redact_removes_credentials(text: str, leak: str) -> None:
    assert leak not in redact(text)


def test_records_get_request_id_and_are_redacted() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %s", (f"Bearer {JWT}",), None)
    token = request_id_var.set("rid-42")
    try:
        ContextFilter().filter(record)
    finally:
        request_id_var.reset(token)
    line = RedactingFormatter("%(request_id)s %(message)s").format(record)
    assert line.startswith("rid-42 ")
    assert JWT not in line


def test_exception_text_is_redacted_too() -> None:
    try:
        raise ValueError(f"could not use Bearer {JWT}")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    ContextFilter().filter(record)
    line = RedactingFormatter("%(message)s").format(record)
    assert "Traceback" in line and "ValueError" in line
    assert JWT not in line
