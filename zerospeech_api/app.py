"""The application factory: settings, database, middleware, routers, offline docs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from zerospeech_api import __version__
from zerospeech_api.accounts import pages as account_pages
from zerospeech_api.accounts import router as accounts
from zerospeech_api.benchmarks import router as benchmarks
from zerospeech_api.db.engine import Database
from zerospeech_api.deps import DatabaseDep, SettingsDep
from zerospeech_api.docs import install_docs
from zerospeech_api.errors import ERROR_RESPONSES, DomainError
from zerospeech_api.evaluation import router as evaluation
from zerospeech_api.leaderboards import router as leaderboards
from zerospeech_api.mail import Mailer
from zerospeech_api.middleware import (
    BodySizeLimitMiddleware,
    ReadOnlyMiddleware,
    RequestIdMiddleware,
)
from zerospeech_api.models import router as models
from zerospeech_api.settings import Settings, load_settings
from zerospeech_api.submissions import router as submissions
from zerospeech_api.submissions.assembly import Assembler

log = logging.getLogger("zerospeech_api.app")

system = APIRouter(tags=["system"])


@system.get("/")
def index(settings: SettingsDep) -> dict[str, str]:
    """Name, version and contact of this server."""
    return {
        "app": settings.app_name,
        "version": __version__,
        "contact": settings.contact_email,
        "docs": "/docs",
    }


@system.get("/health")
def health(db: DatabaseDep) -> dict[str, str]:
    """Liveness and database readiness."""
    with db.session(read_only=True) as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok", "database": db.engine.dialect.name}


@system.get("/_private/submit-available")
def submit_available(settings: SettingsDep) -> bool:
    """True when submissions are open on this server (false in read-only mode)."""
    return not settings.read_only


def _format_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_handlers(app: FastAPI) -> None:
    """Render every error as `{"detail": str}`; never a traceback."""

    @app.exception_handler(DomainError)
    async def _domain(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _format_validation(exc)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(
            {"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unhandled %s on %s %s",
            type(exc).__name__,
            request.method,
            request.url.path,
            exc_info=exc,
        )
        return JSONResponse({"detail": "internal server error"}, status_code=500)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build a new app; nothing global is touched, so tests build as many as they like."""
    settings = settings or load_settings()
    settings.require_secret()
    db = Database(settings.database)
    mailer = Mailer(settings)
    assembler = Assembler(settings=settings, db=db)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not settings.read_only:
            assembler.recover()  # joins interrupted by a crash, temp files of dead processes
        yield
        assembler.close()
        mailer.close()
        db.dispose()

    app = FastAPI(
        title="ZeroSpeech API",
        version=__version__,
        description="Backend of the Zero Resource Speech challenge: accounts, models, "
        "submissions, evaluation and leaderboards.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.mailer = mailer
    app.state.assembler = assembler

    install_handlers(app)
    app.include_router(system)
    for module in (leaderboards, accounts, benchmarks, models, submissions, evaluation):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    app.include_router(account_pages.router)
    install_docs(app)

    # Innermost first (add_middleware wraps what is there: the last added is outermost): the
    # request id wraps everything, then the cheap refusals.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        upload_bytes=settings.max_request_bytes,
    )
    app.add_middleware(ReadOnlyMiddleware, enabled=settings.read_only)
    app.add_middleware(RequestIdMiddleware)
    return app


def create_configured_app() -> FastAPI:
    """Entry point for server processes: settings from $ZR_ENV_FILE/.env, logging set up."""
    from zerospeech_api.logs import setup_logging

    settings = load_settings()
    setup_logging(settings.log_level)
    return create_app(settings)
