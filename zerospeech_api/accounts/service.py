"""Accounts: sign-up, e-mail verification, login, logout, password reset/change, profiles.

Plain keyword-only functions shared by the HTTP routes, the HTML pages and the `users` CLI.
Password hashing is slow on purpose (argon2id): it always runs *outside* a write transaction, so
on SQLite no request holds the database's write lock while hashing, and only after the cheap
refusals (throttles, names taken). Functions that hash and then write therefore take `db=` and
open their own short transactions.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from functools import lru_cache, partial
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zerospeech_api.accounts.schemas import ProfileUpdate, SignupRequest
from zerospeech_api.db.engine import Database
from zerospeech_api.db.keys import name_key
from zerospeech_api.db.tables import OneTimeToken, TokenPurpose, User, utcnow
from zerospeech_api.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Unauthorized,
)
from zerospeech_api.files import package_path
from zerospeech_api.mail import Mailer
from zerospeech_api.security import ratelimit
from zerospeech_api.security.passwords import (
    hash_password,
    hasher,
    needs_rehash,
    verify_password,
)
from zerospeech_api.security.sessions import (
    authenticate,
    has_logged_in_from,
    open_session,
    revoke_all_sessions,
    revoke_session,
)
from zerospeech_api.security.tokens import digest, new_one_time_token
from zerospeech_api.settings import Settings

if TYPE_CHECKING:
    import jinja2

USERNAME_TAKEN = "this username is already taken"
EMAIL_TAKEN = "an account with this e-mail address already exists"
NAME_TAKEN = f"{USERNAME_TAKEN}, or {EMAIL_TAKEN}"
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

MAIL_TEMPLATES_DIR = package_path("zerospeech_api", "templates", "mail")


@lru_cache(maxsize=1)
def _mail_templates() -> jinja2.Environment:
    import jinja2  # here, not at the top: only sending a mail needs it, not a server start

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
    """The user with this username (exact) or e-mail address (in any case, any script)."""
    if "@" in identifier:
        return session.scalar(select(User).where(User.email_key == name_key(identifier)))
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


def _ensure_available(*, session: Session, data: SignupRequest) -> None:
    """`Conflict` naming what is taken, if the username or e-mail address is (compared by
    `name_key`, as the unique indexes compare them)."""
    username_key, email_key = name_key(data.username), name_key(data.email)
    taken = session.execute(
        select(User.username_key).where(
            (User.username_key == username_key) | (User.email_key == email_key)
        )
    ).first()
    if taken is not None:
        raise Conflict(USERNAME_TAKEN if taken.username_key == username_key else EMAIL_TAKEN)


def create_user(
    *,
    db: Database,
    settings: Settings,
    data: SignupRequest,
    verified: bool = False,
    admin: bool = False,
    mailer: Mailer | None = None,
) -> User:
    """Insert a user, and with `mailer` mail them a verification link; `Conflict` if the
    username or e-mail address is taken in any case. Names are checked before the slow hash;
    the database's unique indexes settle concurrent sign-ups."""
    with db.transaction(read_only=True) as session:
        _ensure_available(session=session, data=data)
    password_hash = _hash(settings, data.password)  # outside any transaction
    try:
        with db.transaction() as session:
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
            session.flush()
            if mailer is not None:
                send_verification(session=session, settings=settings, mailer=mailer, user=user)
    except IntegrityError:
        # Lost a race with a concurrent sign-up of the same name: say which one it was.
        with db.transaction(read_only=True) as session:
            _ensure_available(session=session, data=data)
        raise Conflict(NAME_TAKEN) from None
    return user


def signup(
    *,
    db: Database,
    settings: Settings,
    mailer: Mailer,
    data: SignupRequest,
    client_address: str | None,
) -> User:
    """Create an unverified user and mail them a verification link; at most
    `signup_max_per_address` attempts per client address and window (429 past it)."""
    with db.transaction() as session:
        limits = ratelimit.signup_limits(settings=settings, address=client_address)
        ratelimit.hit(session=session, settings=settings, limits=limits)
    return create_user(db=db, settings=settings, data=data, mailer=mailer)


def _revoke_tokens(*, session: Session, user_id: int, purpose: TokenPurpose) -> None:
    """Make every unused link of this purpose unusable (marked used)."""
    session.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.user_id == user_id,
            OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None),
        )
        .values(used_at=utcnow())
    )


def _new_token(
    *, session: Session, user: User, purpose: TokenPurpose, lifetime: dt.timedelta
) -> str:
    """A new one-time token; it replaces the user's earlier unused ones of the same purpose (only
    the newest link mailed works)."""
    _revoke_tokens(session=session, user_id=user.id, purpose=purpose)
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


@dataclass(frozen=True)
class LinkMail:
    to: str
    subject: str
    body: str


def _link_mail(
    *, session: Session, settings: Settings, user: User, purpose: TokenPurpose
) -> LinkMail:
    """Store a one-time token and write the mail with its /page/<purpose> link."""
    if purpose == TokenPurpose.VERIFY:
        hours = settings.verify_token_hours
        lifetime, subject, context = (
            dt.timedelta(hours=hours),
            "verify your e-mail address",
            {"hours": hours},
        )
    else:
        minutes = settings.reset_token_minutes
        lifetime, subject, context = (
            dt.timedelta(minutes=minutes),
            "reset your password",
            {"minutes": minutes},
        )
    token = _new_token(session=session, user=user, purpose=purpose, lifetime=lifetime)
    body = (
        _mail_templates()
        .get_template(f"{purpose}.txt")
        .render(user=user, link=_link(settings, purpose, token), settings=settings, **context)
    )
    return LinkMail(to=user.email, subject=f"{settings.app_name}: {subject}", body=body)


def send_verification(*, session: Session, settings: Settings, mailer: Mailer, user: User) -> None:
    """Store a fresh verification token and mail its link (sent when the session commits)."""
    mail = _link_mail(session=session, settings=settings, user=user, purpose=TokenPurpose.VERIFY)
    mailer.send_on_commit(session, to=mail.to, subject=mail.subject, body=mail.body)


def _wants_link(user: User | None, purpose: TokenPurpose) -> bool:
    if user is None or not user.active:
        return False
    return purpose == TokenPurpose.RESET or not user.verified


def _compose_link_mail(
    *, db: Database, settings: Settings, mailer: Mailer, email: str, purpose: TokenPurpose
) -> EmailMessage | None:
    """On the mail thread: the link mail for the account with this address, if it wants one."""
    with db.transaction() as session:
        user = find_user(session=session, identifier=email)
        if not _wants_link(user, purpose):
            return None
        assert user is not None
        mail = _link_mail(session=session, settings=settings, user=user, purpose=purpose)
    return mailer.compose(to=mail.to, subject=mail.subject, body=mail.body)


def _mail_link_if_account(
    *,
    db: Database,
    settings: Settings,
    mailer: Mailer,
    email: str,
    purpose: TokenPurpose,
    client_address: str | None,
) -> None:
    """Count the request against the mail limits (429 past them), then hand the rest to the
    mail thread: the request does the same work whether or not an account has this address,
    so neither its answer nor its timing tells."""
    with db.transaction() as session:
        limits = ratelimit.mail_limits(settings=settings, email=email, address=client_address)
        ratelimit.hit(session=session, settings=settings, limits=limits)
    mailer.send_later(
        partial(
            _compose_link_mail,
            db=db,
            settings=settings,
            mailer=mailer,
            email=email,
            purpose=purpose,
        )
    )


def resend_verification(
    *,
    db: Database,
    settings: Settings,
    mailer: Mailer,
    email: str,
    client_address: str | None,
) -> None:
    """Mail a new verification link if an unverified account has this address; says nothing."""
    _mail_link_if_account(
        db=db,
        settings=settings,
        mailer=mailer,
        email=email,
        purpose=TokenPurpose.VERIFY,
        client_address=client_address,
    )


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


def _login_limits(
    *, session: Session, settings: Settings, user: User | None, identifier: str, address: str | None
) -> list[ratelimit.Limit]:
    """The throttle limits of a password check for this account (or name) from this address."""
    account = ratelimit.account_key(user_id=user.id if user else None, identifier=identifier)
    known = user is not None and has_logged_in_from(
        session=session, user_id=user.id, address=address
    )
    return ratelimit.login_limits(
        settings=settings, account=account, address=address, known_address=known
    )


def login(
    *,
    db: Database,
    settings: Settings,
    identifier: str,
    password: str,
    client_address: str | None,
) -> LoginResult:
    """Check credentials (throttled: see security.ratelimit) and open a session."""
    ph = _hasher(settings)
    with db.transaction(read_only=True) as session:
        user = find_user(session=session, identifier=identifier)
        limits = _login_limits(
            session=session,
            settings=settings,
            user=user,
            identifier=identifier,
            address=client_address,
        )
        ratelimit.ensure_allowed(session=session, limits=limits)
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
        # Forget this account's failures from this address (not the other counts).
        account = ratelimit.account_key(user_id=user_id, identifier=identifier)
        ratelimit.clear(
            session=session, key=ratelimit.pair_key(account=account, address=client_address)
        )
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
    db: Database,
    settings: Settings,
    mailer: Mailer,
    email: str,
    client_address: str | None,
) -> None:
    """Mail a reset link if an active account has this address; the caller learns nothing,
    from the answer or its timing."""
    _mail_link_if_account(
        db=db,
        settings=settings,
        mailer=mailer,
        email=email,
        purpose=TokenPurpose.RESET,
        client_address=client_address,
    )


def _store_password(*, session: Session, user: User, password_hash: str) -> int:
    """Set a new password hash. Every session and every unused reset link of the user end (a
    link mailed before must not undo the change). Returns the number of sessions ended."""
    user.password_hash = password_hash
    _revoke_tokens(session=session, user_id=user.id, purpose=TokenPurpose.RESET)
    return revoke_all_sessions(session=session, user_id=user.id)


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
        _store_password(session=session, user=user, password_hash=new_hash)
        user.verified = True
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
        limits = _login_limits(
            session=session,
            settings=settings,
            user=user,
            identifier=user.username,
            address=client_address,
        )
        ratelimit.ensure_allowed(session=session, limits=limits)
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
        _store_password(session=session, user=current, password_hash=new_hash)
        return current


def set_password(*, db: Database, settings: Settings, username: str, password: str) -> int:
    """Set a user's password (operator command); ends every session. Returns how many."""
    new_hash = _hash(settings, password)
    with db.transaction() as session:
        user = get_user(session=session, username=username)
        return _store_password(session=session, user=user, password_hash=new_hash)


# --- profiles --------------------------------------------------------------------------------


def update_profile(*, session: Session, username: str, changes: ProfileUpdate) -> User:
    """Change the names and affiliation given; the rest stays."""
    user = get_user(session=session, username=username)
    for name in changes.model_fields_set:
        setattr(user, name, getattr(changes, name))
    session.flush()
    return user
