"""Pure ASGI middleware: request id, body-size limit before the body is read, read-only switch."""

from __future__ import annotations

import json
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zerospeech_api.errors import READ_ONLY_DETAIL
from zerospeech_api.logs import request_id_var

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def header(scope: Scope, name: bytes) -> bytes | None:
    """The value of one request header (`name` lower-case); the last one if it is repeated."""
    value = None
    for key, raw in scope["headers"]:
        if key == name:
            value = raw
    return value


async def send_json(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()
) -> None:
    """Send a complete `{"detail": ...}` response from ASGI code."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    """Takes a sane incoming X-Request-ID or makes one; logs and the response carry it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = (header(scope, b"x-request-id") or b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID_OK.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodyTooLarge(Exception):
    """Raised inside `receive` when a chunked body passes the limit."""


# The only routes that take large bodies: `POST /submissions/{id}/content/add`.
UPLOAD_PATH = re.compile(r"^/submissions/[^/]+/content/add$")


class BodySizeLimitMiddleware:
    """413 before reading when Content-Length is too big; cuts off chunked bodies past the limit.

    Uploads may send `upload_bytes`; every other route `max_bytes` (forms and JSON are small).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.small = max_bytes
        self.large = upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.large if UPLOAD_PATH.match(scope["path"]) else self.small
        declared = header(scope, b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await send_json(send, 400, "Content-Length is not a number")
                return
            if size > limit:
                await send_json(send, 413, f"request body too large: {size} bytes, limit {limit}")
                return
        elif limit == self.small and scope["method"] not in SAFE_METHODS:
            await self._buffer_small_body(scope, receive, send, limit)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_json(send, 413, f"request body too large: limit {limit} bytes")

    async def _buffer_small_body(
        self, scope: Scope, receive: Receive, send: Send, limit: int
    ) -> None:
        # A chunked body on a small route: read it here (it is small by definition) so that an
        # oversized one gets its 413 before the app runs; frameworks turn errors raised while
        # they parse a body into a generic 400.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > limit:
                await send_json(send, 413, f"request body too large: limit {limit} bytes")
                return
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": bytes(body), "more_body": False}]

        async def replay_receive() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replay_receive, send)


class ReadOnlyMiddleware:
    """In read-only mode every write answers 423; reads pass."""

    def __init__(self, app: ASGIApp, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            await send_json(send, 423, READ_ONLY_DETAIL)
            return
        await self.app(scope, receive, send)
