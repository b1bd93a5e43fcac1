"""The application factory: settings, database, middleware, routers, offline docs."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from zerospeech_api import __version__
from zerospeech_api.accounts import router as accounts
from zerospeech_api.benchmarks import router as benchmarks
from zerospeech_api.checks import database_health
from zerospeech_api.cluster import ReadOnlySwitch
from zerospeech_api.db.engine import Database, PoolLimits, is_overloaded
from zerospeech_api.deps import DatabaseDep, PublicRoute, SettingsDep
from zerospeech_api.docs import install_docs
from zerospeech_api.errors import (
    BUSY_DETAIL,
    ERROR_RESPONSES,
    DomainError,
    ServiceUnavailable,
    out_of_space,
    validation_lines,
)
from zerospeech_api.evaluation import router as evaluation
from zerospeech_api.evaluation.watchdog import ServerWatchdog
from zerospeech_api.leaderboards import router as leaderboards
from zerospeech_api.leaderboards.cache import LeaderboardCache
from zerospeech_api.mail import Mailer
from zerospeech_api.metrics import router as metrics_router
from zerospeech_api.metrics.http import MetricsMiddleware, RouteTemplates
from zerospeech_api.middleware import (
    AdmissionMiddleware,
    BodySizeLimitMiddleware,
    ControlCharacterMiddleware,
    HeadMiddleware,
    ReadOnlyMiddleware,
    ResponseHeadersMiddleware,
    UnhandledErrorMiddleware,
)
from zerospeech_api.models import router as models
from zerospeech_api.pages import accounts as account_pages
from zerospeech_api.pages import participant as participant_pages
from zerospeech_api.pages import public as public_pages
from zerospeech_api.settings import Settings, load_settings
from zerospeech_api.submissions import router as submissions
from zerospeech_api.submissions.assembly import Assembler

log = logging.getLogger("zerospeech_api.app")

system = APIRouter(tags=["system"], route_class=PublicRoute)


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
    return database_health(db=db)


@system.get("/_private/submit-available")
def submit_available(request: Request) -> bool:
    """True when submissions are open on this server (false in read-only mode)."""
    switch: ReadOnlySwitch = request.app.state.read_only
    return not switch.active


def allowed_methods(request: Request) -> str:
    """The Allow header of a 405: every method of every route on this path (Starlette names
    only the first route's), HEAD wherever GET is (HeadMiddleware)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def retry_after_seconds(settings: Settings) -> int:
    """Retry-After of a 503: about one queue wait."""
    return max(1, math.ceil(settings.queue_seconds))


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """The one answer to an exception no other handler takes: 503 with Retry-After when the
    database is only busy (pool or lock wait ran out), else a logged bare 500."""
    if is_overloaded(exc):
        log.warning("database busy on %s %s: %s", request.method, request.url.path, exc)
        busy = ServiceUnavailable(
            BUSY_DETAIL, retry_after=retry_after_seconds(request.app.state.settings)
        )
        return JSONResponse({"detail": busy.detail}, status_code=busy.status, headers=busy.headers)
    log.error(
        "unhandled %s on %s %s",
        type(exc).__name__,
        request.method,
        request.url.path,
        exc_info=exc,
    )
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install_handlers(app: FastAPI) -> None:
    """Render every error as `{"detail": str}`; never a traceback."""

    @app.exception_handler(DomainError)
    async def _domain(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(validation_lines(exc.errors())) or "invalid request"
        return JSONResponse({"detail": detail}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)

    # Also rendered by UnhandledErrorMiddleware, inside the request-id and header middleware.
    _unexpected = app.exception_handler(Exception)(unexpected_error)

    @app.exception_handler(OSError)
    @app.exception_handler(DBAPIError)
    async def _storage(request: Request, exc: Exception) -> JSONResponse:
        # A full disk (file writes, or SQLite's "database or disk is full") is a 507 wherever
        # it happens; every other I/O or database error stays a logged 500.
        full = out_of_space(exc)
        if full is None:
            return await _unexpected(request, exc)
        log.warning("out of disk space on %s %s: %s", request.method, request.url.path, exc)
        return await _domain(request, full)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build a new app; nothing global is touched, so tests build as many as they like."""
    settings = settings or load_settings()
    settings.require_secret()
    db = Database(
        settings.database,
        PoolLimits(
            size=settings.db_pool_size,
            overflow=settings.db_max_overflow,
            wait_seconds=settings.db_wait_seconds,
        ),
    )
    mailer = Mailer(settings)
    metrics = metrics_router.Metrics(settings=settings, db=db)
    assembler = Assembler(settings=settings, db=db)
    watchdog = ServerWatchdog(settings=settings, db=db, mailer=mailer)
    read_only = ReadOnlySwitch(settings=settings, db=db)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Sync routes and dependencies run on this event loop's thread pool; it holds no more
        # threads than the pool has connections (README: "Concurrency and overload").
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        read_only.start()  # the cluster-wide switch, re-read every few seconds
        if not settings.read_only:
            assembler.recover()  # joins interrupted by a crash, temp files of dead processes
            watchdog.start()  # says so when no evaluation worker is alive (none can)
        yield
        read_only.stop()
        watchdog.stop()
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
        # No "add the missing slash" redirects: Starlette builds them from the Host header.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.mailer = mailer
    app.state.assembler = assembler
    app.state.metrics = metrics
    app.state.leaderboard_cache = LeaderboardCache(
        db, recheck_seconds=settings.leaderboard_recheck_seconds
    )
    app.state.read_only = read_only

    install_handlers(app)
    app.include_router(system)
    app.include_router(metrics_router.router, responses=ERROR_RESPONSES)
    # The hot public reads first (JSON leaderboards, then the public pages): every router tried
    # before the matching one costs a cached read some microseconds.
    for router in (
        leaderboards.router,
        public_pages.router,
        accounts.public,
        accounts.router,
        benchmarks.public,
        benchmarks.router,
        models.public,
        models.router,
        submissions.public,
        submissions.router,
        submissions.upload,
        evaluation.public,
        evaluation.router,
    ):
        app.include_router(router, responses=ERROR_RESPONSES)
    app.include_router(account_pages.router)
    app.include_router(participant_pages.router)
    install_docs(app)

    # Innermost first (add_middleware wraps what is there: the last added is outermost): the
    # request id and security headers wrap everything (errors included), then the cheap
    # refusals, HEAD and the renderer of unhandled errors; admission comes right before the app.
    app.add_middleware(
        AdmissionMiddleware,
        limit=settings.max_in_flight,
        per_client=settings.max_in_flight_per_client,
        queue_seconds=settings.queue_seconds,
    )
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        upload_bytes=settings.max_request_bytes,
    )
    app.add_middleware(ReadOnlyMiddleware, enabled=lambda: read_only.active)
    app.add_middleware(UnhandledErrorMiddleware, render=unexpected_error)
    app.add_middleware(HeadMiddleware)
    app.add_middleware(ControlCharacterMiddleware)
    app.add_middleware(ResponseHeadersMiddleware)
    # Outermost, so every answer is counted and timed, refusals of the middleware included.
    app.add_middleware(
        MetricsMiddleware,
        metrics=metrics.http,
        templates=RouteTemplates(lambda: app.routes),
    )
    return app


def create_configured_app() -> FastAPI:
    """Entry point for server processes: settings from $ZR_ENV_FILE/.env, logging set up."""
    from zerospeech_api.logs import setup_logging

    settings = load_settings()
    setup_logging(settings.log_level)
    return create_app(settings)
