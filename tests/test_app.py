"""The app shell: index, health, error envelope, request ids, read-only mode, body limit, HTTP
hygiene (HEAD, Allow, security headers, no Host redirects), database concurrency and 503s."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from tests.helpers.burst import writers_blocked
from tests.helpers.factories import bearer, make_user, model_info
from zerospeech_api import __version__
from zerospeech_api.app import create_app
from zerospeech_api.deps import (
    AUTHENTICATES_MARK,
    HOP_MARK,
    PUBLIC_MARK,
    DatabaseRoute,
    PublicRoute,
    get_caller,
    get_session,
)
from zerospeech_api.docs import ASSETS_PREFIX
from zerospeech_api.errors import BUSY_DETAIL, READ_ONLY_DETAIL


def test_index_names_app_version_and_contact(client: TestClient) -> None:
    body = client.get("/").json()
    assert body["version"] == __version__
    assert body["app"] == "zerospeech-api"
    assert "@" in body["contact"]


def test_health_checks_the_database(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_unknown_route_is_json_404_with_request_id(client: TestClient) -> None:
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
    assert len(response.headers["x-request-id"]) == 32


def test_incoming_request_id_is_kept_when_sane(client: TestClient) -> None:
    assert client.get("/", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    odd = client.get("/", headers={"X-Request-ID": "bad id\twith spaces"})
    assert odd.headers["x-request-id"] != "bad id\twith spaces"


def test_read_only_mode_refuses_writes_and_serves_reads(make_settings: Callable, db) -> None:
    settings = make_settings(database_url=db.url, read_only=True)
    with TestClient(create_app(settings)) as client:
        refused = client.post("/auth/login", data={"username": "x", "password": "y"})
        assert refused.status_code == 423
        assert refused.json() == {"detail": READ_ONLY_DETAIL}
        assert client.get("/health").status_code == 200
        assert client.get("/_private/submit-available").json() is False


def test_declared_body_over_limit_is_413_before_reading(make_settings: Callable, db) -> None:
    settings = make_settings(database_url=db.url, max_body_bytes=2048, max_request_bytes=8192)
    with TestClient(create_app(settings)) as client:
        response = client.post("/auth/login", content=b"x" * 4096)
        assert response.status_code == 413
        assert "limit 2048" in response.json()["detail"]
        # Uploads have their own, larger limit: past the small one they reach the route (which
        # refuses this request for its missing part name and token), past their own limit they
        # are refused before reading.
        upload = "/submissions/some-id/content/add"
        assert client.post(upload, content=b"x" * 4096).status_code in (400, 401)
        too_big = client.post(upload, content=b"x" * 9000)
        assert too_big.status_code == 413
        assert "limit 8192" in too_big.json()["detail"]


def test_chunked_body_over_limit_is_cut_off(make_settings: Callable, db) -> None:
    settings = make_settings(database_url=db.url, max_body_bytes=2048)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body arrives chunked
        for _ in range(8):
            yield b"y" * 1024

    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/auth/login",
            content=chunks(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 413


def test_docs_pages_reference_only_local_assets(client: TestClient) -> None:
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assert page.status_code == 200
        assert "http://" not in page.text and "https://" not in page.text, path
    assert client.get("/static/docs/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static/docs/redoc.standalone.js").status_code == 200


def test_unexpected_errors_are_a_bare_json_500(make_settings: Callable, db) -> None:
    app = create_app(make_settings(database_url=db.url))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals: /srv/data password=hunter2")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "hunter2" not in response.text and "Traceback" not in response.text


def test_validation_errors_are_400_with_a_string_detail(make_settings: Callable, db) -> None:
    app = create_app(make_settings(database_url=db.url))

    @app.get("/typed")
    def typed(n: int) -> dict[str, int]:
        return {"n": n}

    with TestClient(app) as client:
        response = client.get("/typed", params={"n": "not-a-number"})
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    assert "n" in response.json()["detail"]


def test_openapi_documents_every_operation_with_its_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec.get("components", {}).get("schemas", {})
    operations = [
        (method.upper(), path, operation)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]
    assert len(operations) > 30
    undocumented = []
    for method, path, operation in operations:
        responses = operation["responses"]
        assert "422" not in responses, (method, path)  # validation errors answer 400
        assert "200" in responses, (method, path)
        if not operation.get("description") and not operation.get("summary"):
            undocumented.append(f"{method} {path}")
        if path not in ("/", "/health", "/_private/submit-available"):
            assert "400" in responses, (method, path)
            error = responses["400"]["content"]["application/json"]["schema"]
            assert error["required"] == ["detail"], (method, path)
    assert undocumented == []


# --- HTTP hygiene (HEAD, Allow, security headers, request ids on 500s, no Host redirects) ----

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def _concrete(path_format: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path_format)


def _methods_by_path(app: FastAPI) -> dict[str, set[str]]:
    """Every routed path (parameters filled in) with the methods of all its routes."""
    found: dict[str, set[str]] = {}
    for route in iter_route_contexts(app.routes):
        if route.methods:
            found.setdefault(_concrete(route.path_format), set()).update(route.methods)
    return found


def test_head_answers_every_get_route_as_get_does_without_a_body(
    app: FastAPI, client: TestClient
) -> None:
    paths = [p for p, methods in _methods_by_path(app).items() if "GET" in methods]
    assert "/health" in paths and len(paths) > 20
    for path in [*paths, "/static/docs/swagger-ui.css"]:
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code, path
        assert head.content == b"", path
    health, probe = client.get("/health"), client.head("/health")
    assert probe.status_code == 200
    assert probe.headers["content-length"] == health.headers["content-length"]


def test_405_allows_every_method_of_every_route_on_the_path(
    app: FastAPI, client: TestClient
) -> None:
    by_path = _methods_by_path(app)
    assert by_path["/users/x/profile"] == {"GET", "PUT", "PATCH"}
    for path, methods in by_path.items():
        expected = methods | ({"HEAD"} if "GET" in methods else set())
        refused = next(m for m in ("DELETE", "PUT", "POST", "GET") if m not in methods)
        response = client.request(refused, path)
        assert response.status_code == 405, (refused, path)
        assert set(response.headers["allow"].split(", ")) == expected, path
        assert response.json() == {"detail": "Method Not Allowed"}


def test_security_headers_and_request_id_on_every_response(make_settings: Callable, db) -> None:
    app = create_app(make_settings(database_url=db.url, max_body_bytes=2048))

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("unexpected")

    with TestClient(app, raise_server_exceptions=False) as client:
        responses = {
            "ok": client.get("/"),
            "head": client.head("/health"),
            "not found": client.get("/no/such/route"),
            "not allowed": client.delete("/health"),
            "too large": client.post("/auth/login", content=b"x" * 4096),
            "unauthorized": client.get("/users/x/profile"),
            "docs": client.get("/docs"),
            "asset": client.get("/static/docs/swagger-ui.css"),
            "openapi": client.get("/openapi.json"),
            "server error": client.get("/boom", headers={"X-Request-ID": "trace-500"}),
        }
    for name, response in responses.items():
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get(header) == value, (name, header)
        assert response.headers.get("x-request-id"), name
    failed = responses["server error"]
    assert failed.status_code == 500 and failed.headers["x-request-id"] == "trace-500"
    assert failed.json() == {"detail": "internal server error"}


def test_no_redirect_is_built_from_the_host_header(app: FastAPI, client: TestClient) -> None:
    hostile = {"Host": "evil.example"}
    for path in _methods_by_path(app):
        for variant in (path, path + "/", path.rstrip("/") or "/"):
            response = client.get(variant, headers=hostile, follow_redirects=False)
            assert "evil.example" not in response.headers.get("location", ""), variant
    # No "add or remove the slash" redirects at all (Starlette builds them from Host).
    assert client.get("/health/", headers=hostile, follow_redirects=False).status_code == 404


# --- concurrency: one hop per transaction, 503 when the database is busy ----------------------


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _walk(sub)


def test_every_user_of_the_request_session_ends_its_transaction_in_its_hop(app: FastAPI) -> None:
    checked = 0
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        for node in _walk(route.dependant):
            if not any(sub.call is get_session for sub in node.dependencies):
                continue
            checked += 1
            if node is route.dependant:
                assert isinstance(route, DatabaseRoute), route.path
            assert getattr(node.call, HOP_MARK, False), (route.path, node.call)
    assert checked > 20


# --- authentication: routers require a caller unless marked public --------------------------

# FastAPI's own schema and the docs' static files: plain Starlette routes, public by nature.
FRAMEWORK_ROUTES = {"/openapi.json", f"{ASSETS_PREFIX}/{{path}}"}


def unmarked_routes(routes: list[BaseRoute]) -> list[str]:
    """Routes that neither require a caller nor sit on a `PublicRoute` router (or do both);
    plain Starlette routes (no dependencies, so no caller) must be marked with `public`."""
    found = []
    for context in iter_route_contexts(routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            marked = getattr(getattr(route, "endpoint", None), PUBLIC_MARK, False)
            if not marked and context.path_format not in FRAMEWORK_ROUTES:
                found.append(f"{context.path_format} (plain route)")
            continue
        needs_caller = any(
            node.call is get_caller or getattr(node.call, AUTHENTICATES_MARK, False)
            for node in _walk(route.dependant)
        )
        if needs_caller == isinstance(route, PublicRoute):
            found.append(f"{sorted(route.methods)} {context.path_format}")
    return found


def test_every_route_requires_a_caller_or_is_marked_public(app: FastAPI) -> None:
    routes = list(iter_route_contexts(app.routes))
    assert len(routes) > 40
    assert unmarked_routes(app.routes) == []
    # The check catches a route added to a plain router, and one on both kinds.
    stray = APIRouter(route_class=DatabaseRoute)
    stray.add_api_route("/stray", lambda: None)
    both = APIRouter(route_class=PublicRoute, dependencies=[Depends(get_caller)])
    both.add_api_route("/both", lambda: None)
    both.add_route("/plain", lambda request: None)
    assert unmarked_routes([*stray.routes, *both.routes]) == [
        "['GET'] /stray",
        "['GET'] /both",
        "/plain (plain route)",
    ]


def test_one_thread_and_one_connection_serve_a_burst(make_settings: Callable, db) -> None:
    # The smallest consistent configuration: if anything held the connection while waiting
    # for the thread (or the reverse), these requests would wait for each other and fail.
    settings = make_settings(
        database_url=db.url, threads=1, db_pool_size=1, db_max_overflow=0, db_wait_seconds=10
    )
    user = make_user(db, settings)
    headers = bearer(db, settings, user)
    create = f"/users/{user.username}/models/create"
    listing = f"/users/{user.username}/models/list"
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(24) as pool:
        answers = list(
            pool.map(
                lambda i: (
                    client.post(create, json=model_info(), headers=headers)
                    if i % 2
                    else client.get(listing, headers=headers)
                ),
                range(24),
            )
        )
        assert [a.status_code for a in answers] == [200] * 24
        assert len(client.get(listing, headers=headers).json()["models"]) == 12


def test_a_blocked_database_is_a_503_with_retry_after(make_settings: Callable, db) -> None:
    settings = make_settings(database_url=db.url, db_wait_seconds=0.2, queue_seconds=2)
    user = make_user(db, settings)
    headers = bearer(db, settings, user)
    with TestClient(create_app(settings)) as client, writers_blocked(db.url, "models"):
        refused = client.post(
            f"/users/{user.username}/models/create", json=model_info(), headers=headers
        )
        read = client.get(f"/users/{user.username}/models/list", headers=headers)
    assert refused.status_code == 503
    assert refused.json() == {"detail": BUSY_DETAIL}
    assert refused.headers["retry-after"] == "2"
    assert refused.headers["x-request-id"]
    assert read.status_code == 200  # reads never wait for the write lock
