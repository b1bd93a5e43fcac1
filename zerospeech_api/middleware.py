"""Pure ASGI middleware: request id and security headers, HEAD, unhandled errors, body-size limit
before the body is read, read-only switch, admission (in-flight limits)."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zerospeech_api.errors import BUSY_DETAIL, READ_ONLY_DETAIL
from zerospeech_api.logs import request_id_var
from zerospeech_api.security.inputs import CONTROL_CHARACTER, UNSAFE_CHARACTER, describe

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# On every response: no MIME sniffing, never framed by another site, and no URL (which may hold
# a one-time token, as /page/verify?token=... does) sent to other sites as a referrer.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def header(scope: Scope, name: bytes) -> bytes | None:
    """The value of one request header (`name` lower-case); the last one if it is repeated."""
    value = None
    for key, raw in scope["headers"]:
        if key == name:
            value = raw
    return value


async def send_json(
    send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()
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


class TrackingSend:
    """An ASGI `send` that notes when the response has started: from then on no other answer
    (an error's) can be sent instead."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class ResponseHeadersMiddleware:
    """Every response (errors, docs and static files included) carries the request id and
    SECURITY_HEADERS, each unless the app set it. The id is a sane incoming X-Request-ID or a
    new one; the logs of the request carry it too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = (header(scope, b"x-request-id") or b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID_OK.match(incoming) else uuid.uuid4().hex
        headers = ((b"x-request-id", request_id.encode()), *SECURITY_HEADERS)
        token = request_id_var.set(request_id)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {key.lower() for key, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in headers if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            request_id_var.reset(token)


class HeadMiddleware:
    """HEAD is GET without the body, on every route that has GET (monitoring probes send
    `HEAD /health`): routed as GET, answered with the GET headers (Content-Length included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the rest of a streamed body: nothing of it is sent
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        # A copy: the server keeps reading the original scope and must still see HEAD.
        routed = {**scope, "method": "GET"}
        try:
            await self.app(routed, receive, send_headers_only)
        finally:
            # What routing found, for the metrics middleware outside (it labels by route).
            if "endpoint" in routed:
                scope["endpoint"] = routed["endpoint"]


class UnhandledErrorMiddleware:
    """Renders an exception no handler took with `render` (the app's one handler for
    unexpected errors), inside the middleware that adds request ids and security headers."""

    def __init__(
        self, app: ASGIApp, render: Callable[[Request, Exception], Awaitable[Response]]
    ) -> None:
        self.app = app
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracking = TrackingSend(send)
        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            if tracking.started:
                raise  # too late for an answer: the server closes the connection
            response = await self.render(Request(scope, receive), exc)
            await response(scope, receive, send)


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
        tracking = TrackingSend(send)

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, tracking)
        except BodyTooLarge:
            if not tracking.started:
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
    """In read-only mode every write answers 423; reads pass. `enabled` is asked per request
    (the cluster-wide switch can change while the server runs)."""

    def __init__(self, app: ASGIApp, enabled: Callable[[], bool]) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS and self.enabled():
            await send_json(send, 423, READ_ONLY_DETAIL)
            return
        await self.app(scope, receive, send)


@dataclass(eq=False)
class _Waiter:
    key: bytes
    event: anyio.Event = field(default_factory=anyio.Event)
    admitted: bool = False


class AdmissionMiddleware:
    """At most `limit` requests in flight in this process, and `per_client` from one bearer
    token (or one client address without a token); the others wait, oldest first, up to
    `queue_seconds`, then get 503 with Retry-After. A burst from one client then queues behind
    its own share while other callers keep getting threads."""

    def __init__(self, app: ASGIApp, *, limit: int, per_client: int, queue_seconds: float) -> None:
        self.app = app
        self.limit = limit
        self.per_client = per_client
        self.queue_seconds = queue_seconds
        self.retry_after = str(max(1, math.ceil(queue_seconds))).encode()
        self.in_flight = 0
        self.by_client: dict[bytes, int] = {}
        self.waiting: deque[_Waiter] = deque()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = header(scope, b"authorization") or (scope.get("client") or ("",))[0].encode()
        if not await self._admit(key):
            await send_json(send, 503, BUSY_DETAIL, [(b"retry-after", self.retry_after)])
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._release(key)

    def _has_room(self, key: bytes) -> bool:
        return self.in_flight < self.limit and self.by_client.get(key, 0) < self.per_client

    def _take(self, key: bytes) -> None:
        self.in_flight += 1
        self.by_client[key] = self.by_client.get(key, 0) + 1

    async def _admit(self, key: bytes) -> bool:
        if self._has_room(key):
            self._take(key)
            return True
        waiter = _Waiter(key)
        self.waiting.append(waiter)
        try:
            with anyio.move_on_after(self.queue_seconds):
                await waiter.event.wait()
        except BaseException:
            self._give_up(waiter)
            raise
        if waiter.admitted:  # a slot was handed over, possibly just as the wait ran out
            return True
        self.waiting.remove(waiter)
        return False

    def _give_up(self, waiter: _Waiter) -> None:
        if waiter.admitted:
            self._release(waiter.key)
        else:
            self.waiting.remove(waiter)

    def _release(self, key: bytes) -> None:
        self.in_flight -= 1
        left = self.by_client[key] - 1
        if left:
            self.by_client[key] = left
        else:
            del self.by_client[key]
        # Hand the freed slot to the oldest waiter that fits (the slot is taken on its behalf,
        # so a newcomer cannot overtake it).
        for waiter in list(self.waiting):
            if self.in_flight >= self.limit:
                break
            if self.by_client.get(waiter.key, 0) < self.per_client:
                self.waiting.remove(waiter)
                self._take(waiter.key)
                waiter.admitted = True
                waiter.event.set()


class ControlCharacterMiddleware:
    """400 when the path or query string holds a character no text field takes (NUL, ESC,
    newlines, bidi controls: security.inputs); no route wants them, PostgreSQL cannot even
    compare a NUL, and here one check covers every path and query parameter."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = unquote_to_bytes(scope.get("query_string", b"")).decode("utf-8", "replace")
            for part, text in (("path", scope["path"]), ("query string", query)):
                found = UNSAFE_CHARACTER.search(text)
                if found:
                    detail = f"the {part} {CONTROL_CHARACTER} (found {describe(found.group())})"
                    await send_json(send, 400, detail)
                    return
        await self.app(scope, receive, send)
