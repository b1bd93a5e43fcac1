"""Request-scoped dependencies as `Annotated` aliases: settings, DB session, the caller.

This module knows no domain (each domain keeps its own dependencies in its `deps.py`). Routers
that own resources require a caller for every route (`AUTHENTICATED`); routes anyone may call
live on routers built with `PublicRoute`, so no route is public by accident.

A request's session holds a connection (and on SQLite, for writes, the write lock) only inside
one thread-pool hop: every sync dependency that takes the session ends its transaction before
its hop returns (`in_one_hop`, read-only on SQLite), and so does the route (`DatabaseRoute`,
which commits and closes). A request waiting for a thread therefore holds no connection and no
lock, so threads and connections cannot starve each other under a burst.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from zerospeech_api.db.engine import Database, reads_only
from zerospeech_api.db.tables import User
from zerospeech_api.errors import Unauthorized
from zerospeech_api.mail import Mailer
from zerospeech_api.security.sessions import authenticate
from zerospeech_api.settings import Settings

READ_METHODS = frozenset({"GET", "HEAD"})
NOT_AUTHENTICATED = "not authenticated: send Authorization: Bearer <token>"
HOP_MARK = "__zr_one_hop__"
PUBLIC_MARK = "__zr_public__"
AUTHENTICATES_MARK = "__zr_authenticates__"

P = ParamSpec("P")
T = TypeVar("T")

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/login", auto_error=False)


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    """The app's database."""
    db: Database = request.app.state.db
    return db


def get_mailer(request: Request) -> Mailer:
    """The app's mailer."""
    mailer: Mailer = request.app.state.mailer
    return mailer


def in_one_hop(function: Callable[P, T], *, reads: bool) -> Callable[P, T]:
    """Wrap a sync dependency (`reads=True`) or route so that the request session's transaction
    ends in the same thread call: committed on success, rolled back on error. A route's session
    is also closed (its objects stay loaded). Under `reads`, SQLite starts no write lock."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        sessions = [value for value in kwargs.values() if isinstance(value, Session)]
        try:
            with reads_only() if reads else nullcontext():
                result = function(*args, **kwargs)
                for session in sessions:
                    if session.in_transaction():
                        session.commit()
        except BaseException:
            for session in sessions:
                session.rollback()
            raise
        finally:
            if not reads:
                for session in sessions:
                    session.close()
        return result

    setattr(run, HOP_MARK, True)
    return run


def reads_in_one_hop(function: Callable[P, T]) -> Callable[P, T]:
    """`in_one_hop` for dependencies: they only read, and leave no transaction open."""
    return in_one_hop(function, reads=True)


def _is_sync_function(endpoint: Callable[..., Any]) -> bool:
    plain = inspect.unwrap(endpoint)
    return not (
        inspect.iscoroutinefunction(plain)
        or inspect.isasyncgenfunction(plain)
        or inspect.isgeneratorfunction(plain)
    )


class DatabaseRoute(APIRoute):
    """The route class of every router: a sync route commits and closes the request session
    in its own thread hop, before FastAPI awaits anything else."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if _is_sync_function(endpoint) and not getattr(endpoint, HOP_MARK, False):
            endpoint = in_one_hop(endpoint, reads=False)
        super().__init__(path, endpoint, **kwargs)


class PublicRoute(DatabaseRoute):
    """The route class of routers whose routes anyone may call without a bearer token: the
    explicit mark of a public route (tests/test_app.py fails on a route with neither it nor a
    required caller)."""


def public(endpoint: Callable[P, T]) -> Callable[P, T]:
    """Mark the endpoint of a plain Starlette route (no FastAPI dependencies, so no caller) as
    open to anyone, as `PublicRoute` marks FastAPI routes."""
    setattr(endpoint, PUBLIC_MARK, True)
    return endpoint


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's session; GET/HEAD sessions are read-only. Creating it opens nothing: the
    connection is taken by the first query, inside a hop, and given back by `in_one_hop`."""
    db: Database = request.app.state.db
    session = db.session(read_only=request.method in READ_METHODS)
    try:
        yield session
    finally:
        if session.in_transaction():
            # Only code outside `in_one_hop` leaves a transaction: end it off the event loop.
            await run_in_threadpool(session.close)
        else:
            session.close()  # nothing to give back: no I/O


def get_client_address(request: Request) -> str | None:
    """The caller's address (gunicorn's forwarded_allow_ips makes it the real one behind nginx)."""
    return request.client.host if request.client else None


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientAddressDep = Annotated[str | None, Depends(get_client_address)]
DatabaseDep = Annotated[Database, Depends(get_database)]
MailerDep = Annotated[Mailer, Depends(get_mailer)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
TokenDep = Annotated[str | None, Depends(oauth2_scheme)]


@dataclass(frozen=True)
class Caller:
    """The authenticated user of a request and the session id of their token."""

    user: User
    jti: str


@reads_in_one_hop
def get_optional_caller(
    session: SessionDep, settings: SettingsDep, token: TokenDep
) -> Caller | None:
    """The caller of a request with a bearer token (401 if it is bad), None without one."""
    if not token:
        return None
    user, jti = authenticate(session=session, settings=settings, token=token)
    return Caller(user=user, jti=jti)


OptionalCallerDep = Annotated[Caller | None, Depends(get_optional_caller)]


def get_caller(caller: OptionalCallerDep) -> Caller:
    """The caller of a request (401 without a token)."""
    if caller is None:
        raise Unauthorized(NOT_AUTHENTICATED)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_current_user(caller: CallerDep) -> User:
    """The caller's user."""
    return caller.user


CurrentUser = Annotated[User, Depends(get_current_user)]


# The dependencies of a router whose routes all need a caller (401 without a valid token).
AUTHENTICATED = [Depends(get_caller)]


def authenticates(dependency: Callable[P, T]) -> Callable[P, T]:
    """Mark a dependency that authenticates the caller itself (401 without a valid token), for
    the one route that cannot take `AUTHENTICATED`: content/add checks its query first and
    authorises in one short session of its own, before the body streams."""
    setattr(dependency, AUTHENTICATES_MARK, True)
    return dependency
