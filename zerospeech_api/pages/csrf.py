"""Page cookies and CSRF tokens: one mechanism for every form under /page/.

The session cookie holds the same bearer token the API issues (a server-side session behind
it). A form's token is an HMAC, under the server secret, of the cookie that identifies the
browser: the session cookie once logged in, else a random pre-session cookie set with the form.
Both cookies are HttpOnly and limited to /page, so another site can neither read them nor, not
knowing the secret, make a token that matches a cookie it managed to plant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Literal, TypedDict

from starlette.requests import Request
from starlette.responses import Response

from zerospeech_api.errors import Forbidden
from zerospeech_api.settings import Settings

SESSION_COOKIE = "zr_session"
PRESESSION_COOKIE = "zr_form"
COOKIE_PATH = "/page"
FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_REFUSED = (
    "this form has expired or was not sent from this site: reload the page and submit it again"
)


def token_for(settings: Settings, binding: str) -> str:
    """The form token of a browser identified by `binding` (a cookie value)."""
    mac = hmac.new(settings.require_secret().encode(), b"csrf\0" + binding.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def binding(request: Request) -> str | None:
    """The cookie a form token is tied to: the session cookie, else the pre-session cookie."""
    return request.cookies.get(SESSION_COOKIE) or request.cookies.get(PRESESSION_COOKIE)


def issue(request: Request, settings: Settings) -> tuple[str, str | None]:
    """A token for the forms of this page, and a new pre-session cookie value if the browser has
    neither cookie yet (the caller sets it with `set_presession`)."""
    current = binding(request)
    fresh = None if current else secrets.token_urlsafe(32)
    return token_for(settings, current or fresh or ""), fresh


def is_valid(request: Request, settings: Settings, submitted: object) -> bool:
    """Whether a submitted token matches the browser's cookie."""
    current = binding(request)
    if not current or not isinstance(submitted, str) or not submitted:
        return False
    return hmac.compare_digest(submitted.encode(), token_for(settings, current).encode())


async def require_csrf(request: Request) -> None:
    """Router dependency: every unsafe request under /page/ carries a valid `csrf_token` field."""
    if request.method in SAFE_METHODS:
        return
    form = await request.form()  # parsed once; FastAPI's Form parameters reuse it
    if not is_valid(request, request.app.state.settings, form.get(FIELD)):
        raise Forbidden(CSRF_REFUSED)


class _CookieFlags(TypedDict):
    """Attributes of the page cookies, as Response.set_cookie takes them."""

    path: str
    httponly: bool
    samesite: Literal["lax", "strict", "none"]
    secure: bool


def _flags(settings: Settings) -> _CookieFlags:
    # Secure when the site is served over https (a plain-http laptop setup must still work).
    return {
        "path": COOKIE_PATH,
        "httponly": True,
        "samesite": "lax",
        "secure": settings.base_url.lower().startswith("https://"),
    }


def set_presession(response: Response, settings: Settings, value: str) -> None:
    """The random cookie that binds form tokens before login (for the browser session only)."""
    response.set_cookie(PRESESSION_COOKIE, value, **_flags(settings))


def set_session(response: Response, settings: Settings, token: str, max_age: int) -> None:
    """Log the browser in: the bearer token in an HttpOnly cookie that lives as long as it."""
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, **_flags(settings))
    response.delete_cookie(PRESESSION_COOKIE, **_flags(settings))


def clear_session(response: Response, settings: Settings) -> None:
    """Forget the session cookie (the server-side session is revoked separately)."""
    response.delete_cookie(SESSION_COOKIE, **_flags(settings))
