"""`serve` as a real gunicorn process: request ids, and credentials never reach the log."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.helpers.server import Server

pytestmark = pytest.mark.e2e


def test_serve_answers_with_request_ids_and_logs_them(make_server: Callable[..., Server]) -> None:
    server = make_server(workers=2)
    with server.client() as client:
        response = client.get("/", headers={"X-Request-ID": "trace-me-123"})
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "trace-me-123"
        # A one-time token in a query string, and a bearer token, must never be logged.
        client.get("/page/verify", params={"token": "Zq9_one_time_token_value_x"})
        client.get("/users/x/profile", headers={"Authorization": "Bearer eyJabc.eyJdef.sig"})
    server.stop()
    log = server.process.output()
    assert "rid=trace-me-123" in log
    assert "/page/verify?token=[redacted]" in log  # the access line is there, redacted
    assert "Zq9_one_time_token_value_x" not in log
    assert "eyJabc.eyJdef.sig" not in log
