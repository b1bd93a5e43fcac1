"""The app shell: index, health, error envelope, request ids, read-only mode, body limit."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fastapi.testclient import TestClient

from zerospeech_api import __version__
from zerospeech_api.app import create_app
from zerospeech_api.errors import READ_ONLY_DETAIL


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
