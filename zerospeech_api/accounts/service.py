"""Accounts: sign-up, e-mail verification, login, logout, password reset/change, profiles.

Plain keyword-only functions shared by the HTTP routes, the HTML pages and the `users` CLI.
Password hashing is slow on purpose (argon2id): it always runs *outside* a write transaction, so
on SQLite no request holds the database's write lock while hashing. Functions that hash and then
write therefore take `db=` and open their own short transactions.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
from argon2 import PasswordHasher
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zerospeech_api.accounts.schemas import ProfileUpdate, SignupRequest
from zerospeech_api.accounts.sessions import (
    authenticate,
    open_session,
    revoke_all_sessions,
    revoke_session,
)
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import OneTimeToken, TokenPurpose, User, utcnow
from zerospeech_api.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Unauthorized,
)
from zerospeech_api.mail import Mailer
from zerospeech_api.security import ratelimit
from zerospeech_api.security.passwords import (
    hash_password,
    hasher,
    needs_rehash,
    verify_password,
)
from zerospeech_api.security.tokens import digest, new_one_time_token
from zerospeech_api.settings import Settings

USERNAME_TAKEN = "this username is already taken"
EMAIL_TAKEN = "an account with this e-mail address already exists"
BAD_CREDENTIALS = "wrong username/e-mail or password"
NOT_VERIFIED = (
    "this account's e-mail address is not verified yet: follow the link in the verification "
    "mail (a new one can be requested at /page/verify)"
)
INACTIVE = "this account is deactivated: contact the organisers"
INVALID_LINK = "this link is invalid, expired or already used"
WRONG_OLD_PASSWORD = "the current password (old_password) is wrong"
PASSWORD_UPDATE_NEEDS = (
    "send either the token from a reset mail, or a bearer token and old_password"
)
USER_NOT_FOUND = "no such user"
SIGNUP_DONE = "account created: follow the link we sent to your e-mail address to verify it"
VERIFIED = "e-mail address verified: you can log in now"
LOGGED_OUT = "logged out: this token no longer works"
PASSWORD_CHANGED = "password changed: every session has ended, log in again"
RESET_SENT = "if an account exists for this address, a reset link has been sent to it"
VERIFY_SENT = "if an unverified account exists for this address, a new link has been sent to it"

MAIL_TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates" / "mail"


@lru_cache(maxsize=1)
def _mail_templates() -> jinja2.Environment:
    # Mail bodies are plain text: HTML-escaping would mangle names like O'Brien.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(MAIL_TEMPLATES_DIR),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _hasher(settings: Settings) -> PasswordHasher:
    return hasher(
        settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
    )


# Each argon2id computation takes `argon2_memory_kib` of RAM and a core for tens of ms. A worker
# runs sync handlers in a pool of ~40 threads: bound the hashes in flight per process, so a burst
# of logins queues instead of multiplying memory and thrashing the CPU caches.
MAX_CONCURRENT_HASHES = 2
_hash_slots = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)


def _hash(settings: Settings, password: str) -> str:
    with _hash_slots:
        return hash_password(_hasher(settings), password)


def _verify(settings: Settings, stored_hash: str | None, password: str) -> bool:
    with _hash_slots:
        return verify_password(_hasher(settings), stored_hash, password)


def _check_password(
    *,
    db: Database,
    settings: Settings,
    limits: list[ratelimit.Limit],
    stored_hash: str | None,
    password: str,
    error: DomainError,
) -> None:
    """Verify a password outside any transaction; a wrong one counts as a failure against
    `limits` (in its own short write transaction), then `error` is raised."""
    if not _verify(settings, stored_hash, password):
        with db.transaction() as session:
            ratelimit.record_failure(session=session, settings=settings, limits=limits)
        raise error


def _link(settings: Settings, page: str, token: str) -> str:
    return f"{settings.base_url.rstrip('/')}/page/{page}?token={token}"


# --- users -----------------------------------------------------------------------------------


def find_user(*, session: Session, identifier: str) -> User | None:
    """The user with this username (exact) or e-mail address (case-insensitive)."""
    if "@" in identifier:
        return session.scalar(select(User).where(func.lower(User.email) == identifier.lower()))
    return session.scalar(select(User).where(User.username == identifier))


def get_user(*, session: Session, username: str) -> User:
    """The user, or `NotFound`."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"{USER_NOT_FOUND}: {username}")
    return user


def list_users(*, session: Session) -> list[User]:
    """All users, oldest first."""
    return list(session.scalars(select(User).order_by(User.created_at, User.id)))


def create_user(
    *,
    session: Session,
    settings: Settings,
    data: SignupRequest,
    verified: bool = False,
    admin: bool = False,
) -> User:
    """Insert a user; `Conflict` if the username or e-mail (any case) is taken."""
    password_hash = _hash(settings, data.password)  # before the write lock
    taken = session.execute(
        select(User.username, User.email).where(
            (func.lower(User.username) == data.username.lower())
            | (func.lower(User.email) == data.email.lower())
        )
    ).first()
    if taken is not None:
        raise Conflict(
            USERNAME_TAKEN if taken.username.lower() == data.username.lower() else EMAIL_TAKEN
        )
    user = User(
        username=data.username,
        email=data.email,
        first_name=data.first_name,
        last_name=data.last_name,
        affiliation=data.affiliation,
        password_hash=password_hash,
        verified=verified,
        active=True,
        admin=admin,
        created_at=utcnow(),
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        # Lost a race with a concurrent sign-up of the same name (PostgreSQL; SQLite serialises).
        raise Conflict(f"{USERNAME_TAKEN}, or {EMAIL_TAKEN}") from None
    return user


def signup(*, session: Session, settings: Settings, mailer: Mailer, data: SignupRequest) -> User:
    """Create an unverified user and mail them a verification link."""
    user = create_user(session=session, settings=settings, data=data)
    send_verification(session=session, settings=settings, mailer=mailer, user=user)
    return user


def _new_token(
    *, session: Session, user: User, purpose: TokenPurpose, lifetime: dt.timedelta
) -> str:
    token, token_hash = new_one_time_token()
    now = utcnow()
    session.add(
        OneTimeToken(
            user_id=user.id,
            purpose=purpose,
            token_hash=token_hash,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    session.flush()
    return token


def _mail_link(
    *,
    session: Session,
    settings: Settings,
    mailer: Mailer,
    user: User,
    purpose: TokenPurpose,
    lifetime: dt.timedelta,
    subject: str,
    **context: object,
) -> None:
    """Store a one-time token and mail its /page/<purpose> link (sent when the session commits)."""
    token = _new_token(session=session, user=user, purpose=purpose, lifetime=lifetime)
    body = (
        _mail_templates()
        .get_template(f"{purpose}.txt")
        .render(user=user, link=_link(settings, purpose, token), settings=settings, **context)
    )
    mailer.send_on_commit(
        session, to=user.email, subject=f"{settings.app_name}: {subject}", body=body
    )


def send_verification(*, session: Session, settings: Settings, mailer: Mailer, user: User) -> None:
    """Store a fresh verification token and mail its link."""
    hours = settings.verify_token_hours
    _mail_link(
        session=session,
        settings=settings,
        mailer=mailer,
        user=user,
        purpose=TokenPurpose.VERIFY,
        lifetime=dt.timedelta(hours=hours),
        subject="verify your e-mail address",
        hours=hours,
    )


def _throttle_mail(
    *, session: Session, settings: Settings, email: str, client_address: str | None
) -> None:
    """429 past the mail limits, else count this request (whether the account exists or not)."""
    limits = ratelimit.mail_limits(email=email, address=client_address)
    ratelimit.ensure_allowed(session=session, settings=settings, limits=limits)
    ratelimit.record_failure(session=session, settings=settings, limits=limits)


def resend_verification(
    *,
    session: Session,
    settings: Settings,
    mailer: Mailer,
    email: str,
    client_address: str | None,
) -> None:
    """Mail a new verification link if an unverified account has this address; says nothing."""
    _throttle_mail(session=session, settings=settings, email=email, client_address=client_address)
    user = find_user(session=session, identifier=email)
    if user is not None and user.active and not user.verified:
        send_verification(session=session, settings=settings, mailer=mailer, user=user)


def _consume_token(*, session: Session, token: str, purpose: TokenPurpose) -> User:
    """Mark a one-time token used (exactly once, even under concurrency) and return its user."""
    now = utcnow()
    user_id = session.scalar(
        update(OneTimeToken)
        .where(
            OneTimeToken.token_hash == digest(token),
            OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None),
            OneTimeToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(OneTimeToken.user_id)
    )
    user = session.get(User, user_id) if user_id is not None else None
    if user is None or not user.active:
        raise BadRequest(INVALID_LINK)
    return user


def _token_is_usable(*, session: Session, token: str, purpose: TokenPurpose) -> bool:
    row = session.scalar(
        select(OneTimeToken).where(
            OneTimeToken.token_hash == digest(token), OneTimeToken.purpose == purpose
        )
    )
    return row is not None and row.used_at is None and row.expires_at > utcnow()


def verify_email(*, session: Session, token: str) -> User:
    """Mark the user of a verification token verified; the token works once, before expiry."""
    user = _consume_token(session=session, token=token, purpose=TokenPurpose.VERIFY)
    user.verified = True
    session.flush()
    return user


def set_verified(*, session: Session, username: str) -> User:
    """Mark a user verified (operator command)."""
    user = get_user(session=session, username=username)
    user.verified = True
    session.flush()
    return user


def set_active(*, session: Session, username: str, active: bool) -> tuple[User, int]:
    """Activate or deactivate a user; deactivation ends every session. Returns (user, ended)."""
    user = get_user(session=session, username=username)
    user.active = active
    ended = 0 if active else revoke_all_sessions(session=session, user_id=user.id)
    session.flush()
    return user, ended


# --- login -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    username: str
    token: str
    expires_at: dt.datetime


def login(
    *,
    db: Database,
    settings: Settings,
    identifier: str,
    password: str,
    client_address: str | None,
) -> LoginResult:
    """Check credentials (rate-limited per account and address) and open a session."""
    ph = _hasher(settings)
    with db.transaction(read_only=True) as session:
        user = find_user(session=session, identifier=identifier)
        account = ratelimit.account_key(user_id=user.id if user else None, identifier=identifier)
        limits = ratelimit.login_limits(settings=settings, account=account, address=client_address)
        ratelimit.ensure_allowed(session=session, settings=settings, limits=limits)
        user_id, stored_hash = (user.id, user.password_hash) if user else (None, None)

    # Slow part, outside any transaction. Unknown users cost the same (dummy hash).
    _check_password(
        db=db,
        settings=settings,
        limits=limits,
        stored_hash=stored_hash,
        password=password,
        error=Unauthorized(BAD_CREDENTIALS),
    )
    assert user is not None and stored_hash is not None
    # Status is told only to someone who knows the password.
    if not user.active:
        raise Forbidden(INACTIVE)
    if not user.verified:
        raise Forbidden(NOT_VERIFIED)
    new_hash = _hash(settings, password) if needs_rehash(ph, stored_hash) else None

    with db.transaction() as session:
        ratelimit.clear(session=session, key=account)
        if new_hash is not None:
            # Only if the password did not change meanwhile.
            session.execute(
                update(User)
                .where(User.id == user_id, User.password_hash == stored_hash)
                .values(password_hash=new_hash)
            )
        current = session.get(User, user_id)
        if current is None or not current.active:
            raise Forbidden(INACTIVE)
        token, expires_at = open_session(
            session=session, settings=settings, user=current, client_address=client_address
        )
        return LoginResult(username=current.username, token=token, expires_at=expires_at)


def logout(*, session: Session, jti: str) -> None:
    """End the session of this token."""
    revoke_session(session=session, jti=jti)


# --- passwords -------------------------------------------------------------------------------


def request_password_reset(
    *,
    session: Session,
    settings: Settings,
    mailer: Mailer,
    email: str,
    client_address: str | None,
) -> None:
    """Mail a reset link if an active account has this address; the caller learns nothing."""
    _throttle_mail(session=session, settings=settings, email=email, client_address=client_address)
    user = find_user(session=session, identifier=email)
    if user is None or not user.active:
        return
    minutes = settings.reset_token_minutes
    _mail_link(
        session=session,
        settings=settings,
        mailer=mailer,
        user=user,
        purpose=TokenPurpose.RESET,
        lifetime=dt.timedelta(minutes=minutes),
        subject="reset your password",
        minutes=minutes,
    )


def reset_password(*, db: Database, settings: Settings, token: str, password: str) -> User:
    """Set a new password from a reset token (single use); ends every session of the user.

    The reset also proves the mailbox, so it verifies the address."""
    with db.transaction(read_only=True) as session:
        usable = _token_is_usable(session=session, token=token, purpose=TokenPurpose.RESET)
    if not usable:  # cheap refusal before hashing
        raise BadRequest(INVALID_LINK)
    new_hash = _hash(settings, password)
    with db.transaction() as session:
        user = _consume_token(session=session, token=token, purpose=TokenPurpose.RESET)
        user.password_hash = new_hash
        user.verified = True
        revoke_all_sessions(session=session, user_id=user.id)
        return user


def change_password(
    *,
    db: Database,
    settings: Settings,
    bearer: str,
    old_password: str,
    password: str,
    client_address: str | None,
) -> User:
    """Change the password of the bearer's user, who proves the current one; ends every
    session (log in again). Wrong old passwords count as failed logins."""
    with db.transaction(read_only=True) as session:
        user, _jti = authenticate(session=session, settings=settings, token=bearer)
        limits = ratelimit.login_limits(
            settings=settings,
            account=ratelimit.account_key(user_id=user.id, identifier=user.username),
            address=client_address,
        )
        ratelimit.ensure_allowed(session=session, settings=settings, limits=limits)
        user_id, stored_hash = user.id, user.password_hash
    _check_password(
        db=db,
        settings=settings,
        limits=limits,
        stored_hash=stored_hash,
        password=old_password,
        error=BadRequest(WRONG_OLD_PASSWORD),
    )
    new_hash = _hash(settings, password)
    with db.transaction() as session:
        current = session.get(User, user_id)
        if current is None:
            raise NotFound(USER_NOT_FOUND)
        current.password_hash = new_hash
        revoke_all_sessions(session=session, user_id=user_id)
        return current


def set_password(*, db: Database, settings: Settings, username: str, password: str) -> int:
    """Set a user's password (operator command); ends every session. Returns how many."""
    new_hash = _hash(settings, password)
    with db.transaction() as session:
        user = get_user(session=session, username=username)
        user.password_hash = new_hash
        return revoke_all_sessions(session=session, user_id=user.id)


# --- profiles --------------------------------------------------------------------------------


def update_profile(*, session: Session, username: str, changes: ProfileUpdate) -> User:
    """Change the names and affiliation given; the rest stays."""
    user = get_user(session=session, username=username)
    for name in changes.model_fields_set:
        setattr(user, name, getattr(changes, name))
    session.flush()
    return user
