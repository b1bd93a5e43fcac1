"""The login throttle, on SQLite and PostgreSQL: limits, Retry-After, clearing, pruning, sharing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import select

from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import LoginFailure, utcnow
from zerospeech_api.errors import TooManyRequests
from zerospeech_api.security import ratelimit
from zerospeech_api.settings import Settings

WINDOW = 300


@pytest.fixture
def limited(make_settings: Callable[..., Settings], db: Database) -> Settings:
    return make_settings(
        database_url=db.url,
        login_max_failures_account=3,
        login_max_failures_address=5,
        login_window_seconds=WINDOW,
    )


def _limits(settings: Settings, account: str = "account:1", address: str = "10.0.0.1"):
    return ratelimit.login_limits(settings=settings, account=account, address=address)


def _fail(db: Database, settings: Settings, limits, at: dt.datetime) -> None:
    with db.transaction() as session:
        ratelimit.record_failure(session=session, settings=settings, limits=limits, now=at)


def _check(db: Database, settings: Settings, limits, at: dt.datetime) -> None:
    with db.transaction(read_only=True) as session:
        ratelimit.ensure_allowed(session=session, limits=limits, now=at)


def test_account_limit_gives_429_with_retry_after_until_the_oldest_leaves(
    db: Database, limited: Settings
) -> None:
    start = utcnow()
    limits = _limits(limited)
    for i in range(3):
        _check(db, limited, limits, start + dt.timedelta(seconds=i * 10))
        _fail(db, limited, limits, start + dt.timedelta(seconds=i * 10))
    with pytest.raises(TooManyRequests) as refused:
        _check(db, limited, limits, start + dt.timedelta(seconds=30))
    assert refused.value.detail.startswith(ratelimit.ACCOUNT_LOCKED)
    # The first failure (at +0) leaves the window at +300: 270 s from +30.
    assert refused.value.headers == {"Retry-After": "270"}
    _check(db, limited, limits, start + dt.timedelta(seconds=WINDOW + 1))


def test_address_limit_spans_accounts(db: Database, limited: Settings) -> None:
    now = utcnow()
    for n in range(5):
        _fail(db, limited, _limits(limited, account=f"account:{n}"), now)
    with pytest.raises(TooManyRequests) as refused:
        _check(db, limited, _limits(limited, account="account:99"), now)
    assert refused.value.detail.startswith(ratelimit.ADDRESS_LOCKED)
    _check(db, limited, _limits(limited, account="account:99", address="10.0.0.2"), now)


def test_clearing_a_key_forgets_only_its_failures(db: Database, limited: Settings) -> None:
    now = utcnow()
    limits = _limits(limited)
    for _ in range(3):
        _fail(db, limited, limits, now)
    with db.transaction() as session:
        ratelimit.clear(session=session, key=limits[0].key)  # what a successful login clears
    _check(db, limited, limits, now)
    with db.transaction(read_only=True) as session:
        left = session.scalars(select(LoginFailure.key)).all()
    # The address's and the account's failures from everywhere still count.
    assert sorted(left) == sorted([limits[1].key] * 3 + [limits[2].key] * 3)


def test_old_failures_are_pruned_when_new_ones_are_recorded(
    db: Database, limited: Settings
) -> None:
    longest = max(limited.login_window_seconds, limited.signup_window_seconds)
    old = utcnow() - dt.timedelta(seconds=longest + 60)
    _fail(db, limited, _limits(limited), old)
    _fail(db, limited, _limits(limited, account="account:2"), utcnow())
    with db.transaction(read_only=True) as session:
        keys = session.scalars(select(LoginFailure.key).order_by(LoginFailure.key)).all()
    assert keys == ["account:2", "address:10.0.0.1", "pair:10.0.0.1|account:2"]


def test_failures_are_shared_between_separate_engines(db: Database, limited: Settings) -> None:
    """Two Database objects stand for two gunicorn workers."""
    other = Database(db.url)
    try:
        now = utcnow()
        limits = _limits(limited)
        _fail(db, limited, limits, now)
        _fail(other, limited, limits, now)
        _fail(db, limited, limits, now)
        with pytest.raises(TooManyRequests):
            _check(other, limited, limits, now)
    finally:
        other.dispose()


def test_unknown_accounts_are_keyed_by_the_name_tried() -> None:
    assert ratelimit.account_key(user_id=7, identifier="Ada") == "account:7"
    assert ratelimit.account_key(user_id=None, identifier=" Ada@X.org ") == "account:?ada@x.org"
    assert len(ratelimit.account_key(user_id=None, identifier="x" * 1000)) == 300


def test_mail_requests_are_throttled_per_email_and_per_client(client) -> None:
    from zerospeech_api.security.ratelimit import (
        MAIL_FROM_CLIENT_THROTTLED,
        MAIL_PER_CLIENT,
        MAIL_PER_EMAIL,
        MAIL_TO_EMAIL_THROTTLED,
    )

    # Unknown addresses count like real ones, so a 429 says nothing about accounts.
    for _ in range(MAIL_PER_EMAIL):
        assert (
            client.post("/auth/password/reset", json={"email": "x@example.org"}).status_code == 200
        )
    refused = client.post("/auth/verify/resend", json={"email": "X@example.org"})
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith(MAIL_TO_EMAIL_THROTTLED)
    assert int(refused.headers["Retry-After"]) > 0
    sent = MAIL_PER_EMAIL
    n = 0
    while sent < MAIL_PER_CLIENT:
        n += 1
        response = client.post("/auth/password/reset", json={"email": f"other{n}@example.org"})
        assert response.status_code == 200
        sent += 1
    refused = client.post("/auth/password/reset", json={"email": "fresh@example.org"})
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith(MAIL_FROM_CLIENT_THROTTLED)
