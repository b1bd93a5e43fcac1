"""Login throttle per account and per client address, kept in the database (shared by all workers).

Each failed login adds one `LoginFailure` row per key. A key with `max` failures inside the window
is refused (429) until the oldest of those falls out of the window; that wait is `Retry-After`.
Check and record are two short statements around the (slow) password check, so concurrent
attempts may overshoot the limit by the number of requests in flight: a bound, not a leak.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from zerospeech_api.db.tables import LoginFailure, utcnow
from zerospeech_api.errors import TooManyRequests
from zerospeech_api.settings import Settings

ACCOUNT_LOCKED = "too many failed logins for this account"
ADDRESS_LOCKED = "too many failed logins from your address"
MAX_KEY_LENGTH = 300  # login_failures.key
# Mail-sending requests (reset, resend verification) count in the same table, under their own
# keys: a few per e-mail address and per client within the login window, so nobody can flood
# an inbox. Unknown addresses count alike: a refusal reveals nothing.
MAIL_PER_EMAIL = 3
MAIL_PER_CLIENT = 10
MAIL_TO_EMAIL_THROTTLED = "too many mails requested for this e-mail address"
MAIL_FROM_CLIENT_THROTTLED = "too many mails requested from your address"


@dataclass(frozen=True)
class Limit:
    """One throttled key and how many failures it may have within the window."""

    key: str
    max_failures: int
    message: str


def _key(prefix: str, value: str) -> str:
    """A throttle key `prefix:value`, cut to fit `login_failures.key`."""
    return f"{prefix}:{value}"[:MAX_KEY_LENGTH]


def account_key(*, user_id: int | None, identifier: str) -> str:
    """The account's key: its id when it exists, else the name tried (so unknown and known
    accounts lock alike and a lock reveals nothing)."""
    if user_id is not None:
        return f"account:{user_id}"
    return _key("account", f"?{identifier.strip().lower()}")


def address_key(address: str | None) -> str:
    return _key("address", address or "unknown")


def login_limits(*, settings: Settings, account: str, address: str | None) -> list[Limit]:
    """The two limits a login attempt is subject to."""
    return [
        Limit(account, settings.login_max_failures_account, ACCOUNT_LOCKED),
        Limit(address_key(address), settings.login_max_failures_address, ADDRESS_LOCKED),
    ]


def mail_limits(*, email: str, address: str | None) -> list[Limit]:
    """The two limits a request that sends mail is subject to."""
    return [
        Limit(
            _key("mail", email.strip().lower()),
            MAIL_PER_EMAIL,
            MAIL_TO_EMAIL_THROTTLED,
        ),
        Limit(
            _key("mail-from", address or "unknown"),
            MAIL_PER_CLIENT,
            MAIL_FROM_CLIENT_THROTTLED,
        ),
    ]


def seconds_until_allowed(
    *, session: Session, settings: Settings, limit: Limit, now: dt.datetime | None = None
) -> int:
    """0 when the key may try again now, else the seconds until it may."""
    now = now or utcnow()
    window = dt.timedelta(seconds=settings.login_window_seconds)
    recent = session.scalars(
        select(LoginFailure.at)
        .where(LoginFailure.key == limit.key, LoginFailure.at > now - window)
        .order_by(LoginFailure.at.desc())
        .limit(limit.max_failures)
    ).all()
    if len(recent) < limit.max_failures:
        return 0
    # Allowed again once the max-th most recent failure leaves the window.
    wait = (recent[-1] + window - now).total_seconds()
    return max(1, math.ceil(wait))


def ensure_allowed(
    *, session: Session, settings: Settings, limits: list[Limit], now: dt.datetime | None = None
) -> None:
    """Raise `TooManyRequests` (with Retry-After) if any limit is exhausted."""
    for limit in limits:
        wait = seconds_until_allowed(session=session, settings=settings, limit=limit, now=now)
        if wait:
            raise TooManyRequests(f"{limit.message}: try again in {wait} seconds", retry_after=wait)


def record_failure(
    *, session: Session, settings: Settings, limits: list[Limit], now: dt.datetime | None = None
) -> None:
    """Count one failure against every limit, and drop rows older than the window."""
    now = now or utcnow()
    session.add_all(LoginFailure(key=limit.key, at=now) for limit in limits)
    prune(session=session, settings=settings, now=now)


def clear(*, session: Session, key: str) -> None:
    """Forget the failures of one key (a successful login clears its account's)."""
    session.execute(delete(LoginFailure).where(LoginFailure.key == key))


def prune(*, session: Session, settings: Settings, now: dt.datetime | None = None) -> None:
    """Delete failures that no longer count."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=settings.login_window_seconds)
    session.execute(delete(LoginFailure).where(LoginFailure.at <= cutoff))
