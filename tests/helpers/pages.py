"""Driving the HTML pages like a browser without JavaScript: read a form's CSRF token, post it."""

from __future__ import annotations

import re
from typing import Any

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client: Any, page: str) -> str:
    """The CSRF token of the forms on `page` (the client keeps the cookie it is tied to)."""
    response = client.get(page)
    assert response.status_code == 200, response.text[:500]
    match = TOKEN.search(response.text)
    assert match, f"no csrf_token on {page}"
    return match.group(1)


def submit(
    client: Any, page: str, action: str, data: dict[str, str] | None = None, **kw: Any
) -> Any:
    """Open `page`, then post its form to `action` with the page's token and `data`."""
    token = csrf_token(client, page)
    return client.post(action, data={**(data or {}), "csrf_token": token}, **kw)


def log_in(client: Any, username: str, password: str) -> Any:
    """Log in through the form; the client keeps the session cookie."""
    return submit(
        client,
        "/page/login",
        "/page/login",
        {"username": username, "password": password},
        follow_redirects=False,
    )
