"""Logging: one format with the request id, and redaction of secrets and tokens."""

from __future__ import annotations

import contextvars
import logging
import re
import sys

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# (trigger words, pattern, replacement): a pattern runs only when one of its words occurs in the
# lower-cased text, so the common log line (an access line with nothing secret) costs a few
# substring checks instead of four regular expressions.
_REDACTIONS = [
    (("bearer",), re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (
        ("eyj",),
        re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"),
        "[redacted-jwt]",
    ),
    (
        ("password", "passwd", "secret", "token"),
        re.compile(r"(?i)((?:password|passwd|secret|token)[\"']?\s*[=:]\s*[\"']?)[^\s&\"',;]+"),
        r"\1[redacted]",
    ),
    (("postgresql",), re.compile(r"(postgresql(?:\+\w+)?://[^:/\s]+:)[^@\s]+@"), r"\1[redacted]@"),
]


def redact(text: str) -> str:
    """Remove bearer tokens, JWTs, password/secret/token values and URL passwords."""
    lowered = text.lower()
    for triggers, pattern, replacement in _REDACTIONS:
        if any(word in lowered for word in triggers):
            text = pattern.sub(replacement, text)
    return text


class ContextFilter(logging.Filter):
    """Adds `request_id` to every record and redacts its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class RedactingFormatter(logging.Formatter):
    """Also redacts exception text appended by the formatter (the filter cleaned the message)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.exc_info or record.exc_text or record.stack_info:
            return redact(line)
        return line


LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s rid=%(request_id)s %(message)s"


def setup_logging(level: str = "info") -> None:
    """Configure the root logger (and uvicorn/gunicorn loggers) once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
