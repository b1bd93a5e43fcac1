"""Domain exceptions, framework-free: services raise them, the app renders them as `{"detail"}`."""

from __future__ import annotations

import errno
from collections.abc import Iterable, Mapping
from typing import Any


class DomainError(Exception):
    """Base of every error a user can cause; `status` is the HTTP status it maps to."""

    status: int = 400

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class BadRequest(DomainError):
    status = 400


class Unauthorized(DomainError):
    status = 401

    def __init__(self, detail: str = "not authenticated") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(DomainError):
    status = 403


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409


class TooLarge(DomainError):
    status = 413


class RequestTimeout(DomainError):
    """The client stopped sending the body; the connection is closed after the answer."""

    status = 408

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Connection": "close"})


class InsufficientStorage(DomainError):
    """The server's disk (or quota, or database) is full: nothing was stored, try again later."""

    status = 507


class TooManyRequests(DomainError):
    status = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


def validation_lines(errors: Iterable[Mapping[str, Any]], *, words: bool = False) -> list[str]:
    """`field: message` for each pydantic error (`errors()` of a ValidationError), never the
    value; the message alone when it is about no field. The `body` FastAPI puts before a
    field is left out. `words`: `first name` instead of `first_name` (forms shown to people)."""
    lines = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        if location[:1] == ["body"] and len(location) > 1:
            location = location[1:]
        field = ".".join(location)
        if words:
            field = field.replace("_", " ")
        text = error.get("msg", "invalid")
        lines.append(f"{field}: {text}" if field else text)
    return lines


NO_SPACE_DETAIL = (
    "the server is out of disk space: nothing was stored; try again later (what was "
    "acknowledged before is kept)"
)
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"
_POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full


def is_out_of_space(exc: BaseException) -> bool:
    """True when `exc`, or the database driver error it wraps, says the disk or quota is full."""
    for error in (exc, getattr(exc, "orig", None)):
        if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
            return True
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
            return True
        if getattr(error, "sqlstate", None) == _POSTGRES_DISK_FULL:
            return True
    return False


def out_of_space(exc: BaseException) -> InsufficientStorage | None:
    """The 507 a full disk maps to wherever the server writes, or None for any other error."""
    return InsufficientStorage(NO_SPACE_DETAIL) if is_out_of_space(exc) else None


class ServiceUnavailable(DomainError):
    """The server is too busy right now (no thread, connection or lock in time): retry later."""

    status = 503

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


BUSY_DETAIL = "the server is busy: nothing was done; try again after Retry-After seconds"
READ_ONLY_DETAIL = "the server is in read-only mode (maintenance): writes are refused, reads work"

# Error responses declared once per router so /docs shows them on every operation.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {
        "description": text,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"detail": {"type": "string"}},
                    "required": ["detail"],
                }
            }
        },
    }
    for status, text in (
        (400, "Bad request"),
        (401, "Not authenticated"),
        (403, "Not allowed"),
        (404, "Not found"),
        (409, "Conflict with the resource's state"),
        (413, "Request too large"),
        (423, "Read-only mode"),
        (429, "Too many requests"),
        (503, "The server is busy (nothing was done; retry after Retry-After seconds)"),
        (507, "The server's disk is full (nothing was stored; try again later)"),
    )
}
