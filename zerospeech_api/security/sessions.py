"""Server-side sessions behind the bearer tokens: open, authenticate, revoke."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from zerospeech_api.db.engine import rows_changed
from zerospeech_api.db.tables import AuthSession, User, utcnow
from zerospeech_api.errors import Unauthorized
from zerospeech_api.security.tokens import (
    InvalidToken,
    decode_session_token,
    issue_session_token,
)
from zerospeech_api.settings import Settings

INVALID_TOKEN = "invalid or expired token: log in again"


def open_session(
    *, session: Session, settings: Settings, user: User, client_address: str | None = None
) -> tuple[str, dt.datetime]:
    """Issue a bearer token for the user and record its session; returns (token, expires_at)."""
    now = utcnow()
    token, claims = issue_session_token(
        secret=settings.require_secret(),
        username=user.username,
        lifetime=dt.timedelta(days=settings.token_lifetime_days),
        now=now,
    )
    session.add(
        AuthSession(
            jti=claims.jti,
            user_id=user.id,
            created_at=now,
            expires_at=claims.expires_at,
            client_address=client_address,
        )
    )
    session.flush()
    return token, claims.expires_at


def authenticate(*, session: Session, settings: Settings, token: str) -> tuple[User, str]:
    """The active user and session id behind a token, or `Unauthorized`."""
    try:
        claims = decode_session_token(secret=settings.require_secret(), token=token)
    except InvalidToken:
        raise Unauthorized(INVALID_TOKEN) from None
    row = session.get(AuthSession, claims.jti)
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        raise Unauthorized(INVALID_TOKEN)
    user = row.user
    if user.username != claims.username or not user.active:
        raise Unauthorized(INVALID_TOKEN)
    return user, row.jti


def revoke_session(*, session: Session, jti: str) -> None:
    """End one session now."""
    session.execute(
        update(AuthSession)
        .where(AuthSession.jti == jti, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def revoke_all_sessions(*, session: Session, user_id: int) -> int:
    """End every open session of a user (password change, deactivation); returns how many."""
    statement = (
        update(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return rows_changed(session, statement)


def open_session_count(*, session: Session, user_id: int) -> int:
    """How many unexpired, unrevoked sessions a user has."""
    count = session.scalar(
        select(func.count())
        .select_from(AuthSession)
        .where(
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > utcnow(),
        )
    )
    return count or 0


def has_logged_in_from(*, session: Session, user_id: int, address: str | None) -> bool:
    """True when the user has opened a session from this client address before (the login
    throttle trusts such addresses more: see security.ratelimit)."""
    if address is None:
        return False
    found = session.scalar(
        select(AuthSession.jti)
        .where(AuthSession.user_id == user_id, AuthSession.client_address == address)
        .limit(1)
    )
    return found is not None
