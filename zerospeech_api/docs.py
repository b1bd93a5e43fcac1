"""/docs and /redoc served from assets bundled in the package, never from a CDN."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from zerospeech_api.deps import PublicRoute
from zerospeech_api.files import package_path

ASSETS_DIR = package_path("fastapi_offline", "static")
ASSETS_PREFIX = "/static/docs"
# The pages may load only what this server serves: ReDoc's bundle, for one, links its footer logo
# from a CDN; the policy stops the browser from asking (no request leaves the host).
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:"
)


def _openapi_with_our_errors(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI documents validation errors as 422; this app answers them with 400 and
    `{"detail": str}` (declared on every router), so the 422 entries and schemas go."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def install_docs(app: FastAPI) -> None:
    """Mount the Swagger UI and ReDoc assets and the two pages (app created with docs off)."""
    # FastAPI's documented way to customise the schema is replacing the method on the instance.
    app.openapi = _openapi_with_our_errors(app)  # type: ignore[method-assign]  # see above
    app.mount(ASSETS_PREFIX, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    title = f"{app.title} - API documentation"
    pages = APIRouter(include_in_schema=False, route_class=PublicRoute)

    @pages.get("/docs")
    def swagger_ui() -> HTMLResponse:
        return _offline(
            get_swagger_ui_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=title,
                swagger_js_url=f"{ASSETS_PREFIX}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_PREFIX}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS_PREFIX}/favicon.png",
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @pages.get("/redoc")
    def redoc() -> HTMLResponse:
        return _offline(
            get_redoc_html(
                openapi_url=app.openapi_url or "/openapi.json",
                title=title,
                redoc_js_url=f"{ASSETS_PREFIX}/redoc.standalone.js",
                redoc_favicon_url=f"{ASSETS_PREFIX}/favicon.png",
                with_google_fonts=False,
            )
        )

    app.include_router(pages)


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page
