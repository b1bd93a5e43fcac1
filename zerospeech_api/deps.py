"""Request-scoped dependencies as `Annotated` aliases: settings, DB session, current user.

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

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from zerospeech_api.accounts.sessions import authenticate
from zerospeech_api.db.engine import Database, reads_only
from zerospeech_api.db.tables import Submission, User
from zerospeech_api.errors import Forbidden, NotFound, Unauthorized
from zerospeech_api.mail import Mailer
from zerospeech_api.settings import Settings
from zerospeech_api.submissions.service import owned_submission
from zerospeech_api.submissions.uploads import UploadTarget, check_declared_length, plan_upload

READ_METHODS = frozenset({"GET", "HEAD"})
NOT_AUTHENTICATED = "not authenticated: send Authorization: Bearer <token>"
HOP_MARK = "__zr_one_hop__"

P = ParamSpec("P")
T = TypeVar("T")

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/login", auto_error=False)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_database(request: Request) -> Database:
    return request.app.state.db


def get_mailer(request: Request) -> Mailer:
    return request.app.state.mailer


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
    if caller is None:
        raise Unauthorized(NOT_AUTHENTICATED)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_current_user(caller: CallerDep) -> User:
    return caller.user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_admin_user(user: CurrentUser) -> User:
    if not user.admin:
        raise Forbidden("administrators only")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]


def require_self_or_admin(username: str, user: User) -> None:
    """403 unless the caller is `username` or an admin (the contract's profile rule)."""
    if user.username != username and not user.admin:
        raise Forbidden("not allowed: this resource belongs to another user")


@reads_in_one_hop
def get_path_user(username: str, user: CurrentUser, session: SessionDep) -> User:
    """The user named in the path, when the caller is that user or an admin (403 otherwise)."""
    require_self_or_admin(username, user)
    if user.username == username:
        return user
    target = session.scalar(select(User).where(User.username == username))
    if target is None:
        raise NotFound(f"no user {username}")
    return target


PathUser = Annotated[User, Depends(get_path_user)]


@reads_in_one_hop
def get_owned_submission(submission_id: str, user: CurrentUser, session: SessionDep) -> Submission:
    """The submission if the caller owns it or is an admin (404 unknown, 403 someone else's)."""
    return owned_submission(session=session, submission_id=submission_id, user=user)


OwnedSubmission = Annotated[Submission, Depends(get_owned_submission)]


def get_upload_target(
    request: Request,
    submission_id: str,
    part_name: Annotated[str, Query(max_length=1000, description="A file name from the index.")],
    db: DatabaseDep,
    settings: SettingsDep,
    token: TokenDep,
) -> UploadTarget:
    """Authorise a content/add before its body is read, in a short read-only session (no write
    transaction may stay open while the body streams)."""
    if not token:
        raise Unauthorized(NOT_AUTHENTICATED)
    with db.session(read_only=True) as session:
        user, _ = authenticate(session=session, settings=settings, token=token)
        target = plan_upload(
            session=session,
            settings=settings,
            submission_id=submission_id,
            user=user,
            part_name=part_name,
        )
    check_declared_length(target, request.headers.get("content-length"))
    return target


UploadTargetDep = Annotated[UploadTarget, Depends(get_upload_target)]
