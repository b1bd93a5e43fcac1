"""Domain exceptions, framework-free: services raise them, the app renders them as `{"detail"}`."""

from __future__ import annotations


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


class TooManyRequests(DomainError):
    status = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


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
    )
}
