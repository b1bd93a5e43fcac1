"""Throttles kept in the database (shared by all workers): failed logins, sign-ups and mails.

Each counted event adds one `LoginFailure` row per key. A key with `max` rows inside its window is
refused (429) until the oldest of those falls out of the window; that wait is `Retry-After`.
Check and record are two short statements around the (slow) password check, so concurrent
attempts may overshoot the limit by the number of requests in flight: a bound, not a leak.

Failed logins (see the README, "Throttle") are counted under three keys:
- the account from this client address: `login_max_failures_account`, always applies, so one
  source can guess a few passwords per window and no more;
- the client address over every account: `login_max_failures_address`;
- the account from every address: `login_max_failures_account_global`, against guessing spread
  over many addresses.
The last two do not apply to an address the account has logged in from before: a stranger who
sends wrong passwords from elsewhere can slow new addresses down, never lock the owner out of
the machine they use.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from zerospeech_api.db.keys import name_key
from zerospeech_api.db.tables import LoginFailure, utcnow
from zerospeech_api.errors import TooManyRequests
from zerospeech_api.settings import Settings

ACCOUNT_LOCKED = "too many failed logins for this account from your address"
ADDRESS_LOCKED = "too many failed logins from your address"
ACCOUNT_LOCKED_FOR_NEW_ADDRESSES = (
    "too many failed logins for this account from addresses it never logged in from (those it "
    "logged in from before are not affected)"
)
SIGNUP_THROTTLED = "too many sign-ups from your address"
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
    """One throttled key and how many events it may have within its window."""

    key: str
    max_failures: int
    message: str
    window_seconds: int


def _key(prefix: str, value: str) -> str:
    """A throttle key `prefix:value`, cut to fit `login_failures.key`."""
    return f"{prefix}:{value}"[:MAX_KEY_LENGTH]


def account_key(*, user_id: int | None, identifier: str) -> str:
    """The account's key: its id when it exists, else the name tried (so unknown and known
    accounts lock alike and a lock reveals nothing)."""
    if user_id is not None:
        return f"account:{user_id}"
    return _key("account", f"?{name_key(identifier)}")


def address_key(address: str | None) -> str:
    return _key("address", address or "unknown")


def pair_key(*, account: str, address: str | None) -> str:
    """The key of one account from one address (the address first: long names are cut)."""
    return _key("pair", f"{address or 'unknown'}|{account}")


def login_limits(
    *, settings: Settings, account: str, address: str | None, known_address: bool = False
) -> list[Limit]:
    """The limits a login attempt is subject to; `known_address` when the account has logged
    in from this address before (only the per-account-and-address limit applies then)."""
    window = settings.login_window_seconds
    limits = [
        Limit(
            pair_key(account=account, address=address),
            settings.login_max_failures_account,
            ACCOUNT_LOCKED,
            window,
        ),
        Limit(address_key(address), settings.login_max_failures_address, ADDRESS_LOCKED, window),
        Limit(
            account,
            settings.login_max_failures_account_global,
            ACCOUNT_LOCKED_FOR_NEW_ADDRESSES,
            window,
        ),
    ]
    return limits[:1] if known_address else limits


def mail_limits(*, settings: Settings, email: str, address: str | None) -> list[Limit]:
    """The two limits a request that sends mail is subject to."""
    window = settings.login_window_seconds
    return [
        Limit(_key("mail", name_key(email)), MAIL_PER_EMAIL, MAIL_TO_EMAIL_THROTTLED, window),
        Limit(
            _key("mail-from", address or "unknown"),
            MAIL_PER_CLIENT,
            MAIL_FROM_CLIENT_THROTTLED,
            window,
        ),
    ]


def signup_limits(*, settings: Settings, address: str | None) -> list[Limit]:
    """The limit on sign-ups (each costs a password hash) from one client address."""
    return [
        Limit(
            _key("signup", address or "unknown"),
            settings.signup_max_per_address,
            SIGNUP_THROTTLED,
            settings.signup_window_seconds,
        )
    ]


def seconds_until_allowed(*, session: Session, limit: Limit, now: dt.datetime | None = None) -> int:
    """0 when the key may try again now, else the seconds until it may."""
    now = now or utcnow()
    window = dt.timedelta(seconds=limit.window_seconds)
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
    *, session: Session, limits: list[Limit], now: dt.datetime | None = None
) -> None:
    """Raise `TooManyRequests` (with Retry-After) if any limit is exhausted."""
    for limit in limits:
        wait = seconds_until_allowed(session=session, limit=limit, now=now)
        if wait:
            raise TooManyRequests(f"{limit.message}: try again in {wait} seconds", retry_after=wait)


def record_failure(
    *, session: Session, settings: Settings, limits: list[Limit], now: dt.datetime | None = None
) -> None:
    """Count one event against every limit, and drop rows that no longer count."""
    now = now or utcnow()
    session.add_all(LoginFailure(key=limit.key, at=now) for limit in limits)
    prune(session=session, settings=settings, now=now)


def hit(
    *, session: Session, settings: Settings, limits: list[Limit], now: dt.datetime | None = None
) -> None:
    """Refuse (429) past any limit, else count this request against every limit, before the
    work it limits is done."""
    ensure_allowed(session=session, limits=limits, now=now)
    record_failure(session=session, settings=settings, limits=limits, now=now)


def clear(*, session: Session, key: str) -> None:
    """Forget the failures of one key (a successful login clears its `pair_key`)."""
    session.execute(delete(LoginFailure).where(LoginFailure.key == key))


def prune(*, session: Session, settings: Settings, now: dt.datetime | None = None) -> None:
    """Delete rows older than the longest window: they no longer count for any key."""
    longest = max(settings.login_window_seconds, settings.signup_window_seconds)
    cutoff = (now or utcnow()) - dt.timedelta(seconds=longest)
    session.execute(delete(LoginFailure).where(LoginFailure.at <= cutoff))
