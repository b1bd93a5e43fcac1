"""AdmissionMiddleware in process: per-process and per-client limits, fair hand-over, and a
503 with Retry-After once the queue time runs out (ordering checks, no timing assertions)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import httpx
from starlette.types import Receive, Scope, Send

from zerospeech_api.errors import BUSY_DETAIL
from zerospeech_api.logs import request_id_var
from zerospeech_api.middleware import AdmissionMiddleware, ResponseHeadersMiddleware


class HeldApp:
    """An ASGI app whose requests stay in flight until `release` is set."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.entered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


def _run(test: Callable[[HeldApp, httpx.AsyncClient], Awaitable[None]], **limits: float) -> None:
    async def main() -> None:
        held = HeldApp()
        app = AdmissionMiddleware(held, **limits)  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await test(held, client)

    anyio.run(main)


def _token(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}"}


def test_a_client_over_its_share_gets_503_while_others_are_served() -> None:
    async def scenario(held: HeldApp, client: httpx.AsyncClient) -> None:
        answers: dict[str, httpx.Response] = {}

        async def get(label: str, headers: dict[str, str]) -> None:
            answers[label] = await client.get("/", headers=headers)

        async with anyio.create_task_group() as group:
            for i in range(2):
                group.start_soon(get, f"a{i}", _token("a"))
            await anyio.wait_all_tasks_blocked()
            group.start_soon(get, "a-extra", _token("a"))
            group.start_soon(get, "b", _token("b"))
            await anyio.wait_all_tasks_blocked()
            assert held.entered == 3  # a's share (2) and b, while a's third waits
            # a's third is refused when its queue time runs out, before anything finished.
            with anyio.fail_after(30):
                while "a-extra" not in answers:
                    await anyio.sleep(0.01)
            assert len(answers) == 1
            held.release.set()
        refused = answers["a-extra"]
        assert refused.status_code == 503
        assert refused.json() == {"detail": BUSY_DETAIL}
        assert refused.headers["retry-after"] == "1"
        assert [answers[k].status_code for k in ("a0", "a1", "b")] == [200, 200, 200]

    _run(scenario, limit=4, per_client=2, queue_seconds=0.2)


def test_a_freed_slot_goes_to_the_oldest_waiter_that_fits() -> None:
    async def scenario(held: HeldApp, client: httpx.AsyncClient) -> None:
        order: list[str] = []

        async def get(label: str) -> None:
            response = await client.get("/", headers=_token(label))
            assert response.status_code == 200
            order.append(label)

        async with anyio.create_task_group() as group:
            group.start_soon(get, "first")
            await anyio.wait_all_tasks_blocked()
            for label in ("second", "third"):
                group.start_soon(get, label)
                await anyio.wait_all_tasks_blocked()
            assert held.entered == 1  # the process limit (1) holds the other two in the queue
            held.release.set()
        assert order == ["first", "second", "third"]

    _run(scenario, limit=1, per_client=1, queue_seconds=30)


def test_response_headers_are_added_once_and_never_over_the_apps_own() -> None:
    seen: list[str | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(request_id_var.get())
        own = [(b"x-request-id", b"from-app"), (b"referrer-policy", b"same-origin")]
        await send({"type": "http.response.start", "status": 200, "headers": own})
        await send({"type": "http.response.body", "body": b"ok"})

    async def plain(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        for inner, incoming, expected_id in (
            (app, "abc-123", "from-app"),
            (plain, "abc-123", "abc-123"),
            (plain, "bad id\n", None),
        ):
            transport = httpx.ASGITransport(app=ResponseHeadersMiddleware(inner))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                response = await client.get("/", headers={"X-Request-ID": incoming.strip()})
            names = [name.lower() for name, _ in response.headers.multi_items()]
            assert names.count("x-request-id") == 1
            assert names.count("referrer-policy") == 1
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            if expected_id:
                assert response.headers["x-request-id"] == expected_id
            else:
                assert len(response.headers["x-request-id"]) == 32  # a new one
        assert seen == ["abc-123"]  # the logs of the request carry the incoming id
        assert response.headers["referrer-policy"] == "no-referrer"

    anyio.run(main)
