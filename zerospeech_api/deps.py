"""Request-scoped dependencies as `Annotated` aliases: settings, DB session, current user."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from zerospeech_api.accounts.sessions import authenticate
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Submission, User
from zerospeech_api.errors import Forbidden, NotFound, Unauthorized
from zerospeech_api.mail import Mailer
from zerospeech_api.settings import Settings
from zerospeech_api.submissions.service import owned_submission
from zerospeech_api.submissions.uploads import UploadTarget, check_declared_length, plan_upload

READ_METHODS = frozenset({"GET", "HEAD"})
NOT_AUTHENTICATED = "not authenticated: send Authorization: Bearer <token>"

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/login", auto_error=False)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_database(request: Request) -> Database:
    return request.app.state.db


def get_mailer(request: Request) -> Mailer:
    return request.app.state.mailer


def get_session(request: Request) -> Iterator[Session]:
    """A session committed before the response is sent; GET/HEAD sessions are read-only."""
    db: Database = request.app.state.db
    with db.session(read_only=request.method in READ_METHODS) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


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
