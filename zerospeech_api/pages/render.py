"""Rendering of every HTML page: one autoescaping jinja2 environment, the stylesheet, headers.

Two kinds of responses: personal pages and forms (`no-store`, with a CSRF token and, the first
time, a pre-session cookie) and public pages (no cookie, a strong ETag and the same
`Cache-Control` as the JSON leaderboards, so nginx caches them alike). Both carry a Content
Security Policy that allows only this server's own stylesheet: no script, no outside resource.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from zerospeech_api.files import package_path
from zerospeech_api.leaderboards.cache import etag_of
from zerospeech_api.leaderboards.definition import format_number
from zerospeech_api.leaderboards.router import cached_response
from zerospeech_api.pages import csrf

if TYPE_CHECKING:
    import jinja2

TEMPLATES_DIR = package_path("zerospeech_api", "templates")
STATIC_DIR = package_path("zerospeech_api", "static")
STATIC_PREFIX = "/page/static"
# The files under /page/static/ and their types (nothing else is served from there).
STATIC_FILES = {"style.css": "text/css; charset=utf-8", "icon.svg": "image/svg+xml"}

CSP = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def ago(moment: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """`5 min`, `3 h 10 min`, `2 days`: how long ago (or, for a future moment, how long until)."""
    if moment is None:
        return ""
    seconds = abs(((now or dt.datetime.now(dt.UTC)) - moment).total_seconds())
    return duration(seconds)


def duration(seconds: float) -> str:
    """A rough human duration."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def when(moment: dt.datetime | dt.date | None) -> str:
    """`2024-06-15 14:05 UTC` (dates as `2024-06-15`)."""
    if moment is None:
        return ""
    if isinstance(moment, dt.datetime):
        return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return moment.isoformat()


def web_url(value: Any) -> str | None:
    """The value if it is an http(s) URL (safe as a link target), else None."""
    if isinstance(value, str) and value.lower().startswith(("https://", "http://")):
        return value
    return None


@functools.cache
def environment() -> jinja2.Environment:
    """The one template environment: autoescape for every file, helpers as filters."""
    import jinja2  # here, not at the top: a server start imports no page machinery it may not use

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # everything, whatever the file name
        undefined=jinja2.ChainableUndefined,
    )
    env.filters.update(ago=ago, duration=duration, when=when, number=format_number, web_url=web_url)
    env.globals.update(stylesheet=stylesheet_url(), icon=f"{STATIC_PREFIX}/icon.svg")
    return env


@functools.cache
def static_file(name: str) -> tuple[bytes, str]:
    """The bytes of a file under static/ and their ETag (read once per process)."""
    body = (STATIC_DIR / name).read_bytes()
    return body, etag_of(body)


def stylesheet_url() -> str:
    """The stylesheet's URL with its content hash, so a new release is fetched at once."""
    body, _ = static_file("style.css")
    return f"{STATIC_PREFIX}/style.css?v={hashlib.sha256(body).hexdigest()[:12]}"


def render(request: Request, name: str, *, title: str, **context: Any) -> str:
    """The page as text; `context` values are escaped by the template."""
    settings = request.app.state.settings
    context.update(title=title, app_name=settings.app_name, contact_email=settings.contact_email)
    return environment().get_template(name).render(context)


def form_page(
    request: Request,
    name: str,
    *,
    title: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A personal page or form: not cached anywhere, with a CSRF token for its forms."""
    settings = request.app.state.settings
    token, fresh = csrf.issue(request, settings)
    body = render(request, name, title=title, csrf_token=token, **context)
    response = HTMLResponse(
        body,
        status_code=status_code,
        headers={**PAGE_HEADERS, "Cache-Control": "no-store", **(headers or {})},
    )
    if fresh:
        csrf.set_presession(response, settings, fresh)
    return response


def cacheable(request: Request, body: bytes, etag: str, media_type: str) -> Response:
    """200 with the body or 304, cached like the JSON leaderboards, with the page headers."""
    response = cached_response(request, body, etag, media_type)
    response.headers.update(PAGE_HEADERS)
    return response


def public_page(request: Request, name: str, *, title: str, **context: Any) -> Response:
    """A public page: the same bytes for everyone (no cookie, no token), ETag and public cache."""
    body = render(request, name, title=title, **context).encode()
    return cacheable(request, body, etag_of(body), "text/html; charset=utf-8")


def error_page(request: Request, status_code: int, text: str) -> HTMLResponse:
    """A 4xx page with the reason (personal pages and public pages alike: never cached)."""
    body = render(request, "pages/error.html", title=_TITLES.get(status_code, "Error"), text=text)
    return HTMLResponse(
        body, status_code=status_code, headers={**PAGE_HEADERS, "Cache-Control": "no-store"}
    )


_TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Not possible now"}
