"""Abuse of sign-up and login, on SQLite and PostgreSQL: sign-ups are limited per client address
and refused before any hashing; wrong passwords from strangers never lock an account's owner out
of the addresses they use."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from tests.helpers.factories import DEFAULT_PASSWORD, make_user
from zerospeech_api.accounts import service
from zerospeech_api.accounts.schemas import SignupRequest
from zerospeech_api.db.engine import Database
from zerospeech_api.errors import Conflict, TooManyRequests, Unauthorized
from zerospeech_api.mail import Mailer
from zerospeech_api.security import ratelimit
from zerospeech_api.settings import Settings


@pytest.fixture
def mailer(settings: Settings) -> Iterator[Mailer]:
    m = Mailer(settings)
    yield m
    m.close()


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the password hashes the account service computes (the real ones still run)."""
    made: list[str] = []
    real = service.hash_password

    def counting(ph: PasswordHasher, password: str) -> str:
        made.append(password)
        return real(ph, password)

    monkeypatch.setattr(service, "hash_password", counting)
    return made


def _data(username: str, email: str | None = None) -> SignupRequest:
    return SignupRequest(
        username=username,
        email=email or f"{username}@example.org",
        first_name="Ada",
        last_name="Lovelace",
        affiliation="Engines",
        password="a long enough password",
    )


def _signup(db: Database, settings: Settings, mailer: Mailer, data: SignupRequest, address: str):
    return service.signup(
        db=db, settings=settings, mailer=mailer, data=data, client_address=address
    )


def test_a_taken_name_is_refused_before_the_password_is_hashed(
    db: Database, settings: Settings, mailer: Mailer, hashes: list[str]
) -> None:
    _signup(db, settings, mailer, _data("ada"), "10.0.0.1")
    assert len(hashes) == 1
    for taken in (_data("ADA", "other@example.org"), _data("other", "Ada@Example.org")):
        with pytest.raises(Conflict):
            _signup(db, settings, mailer, taken, "10.0.0.1")
    assert len(hashes) == 1  # no work for refused sign-ups


def test_sign_ups_are_limited_per_client_address(
    make_settings: Callable[..., Settings], db: Database, mailer: Mailer, hashes: list[str]
) -> None:
    settings = make_settings(database_url=db.url, signup_max_per_address=3)
    _signup(db, settings, mailer, _data("one"), "10.0.0.1")
    _signup(db, settings, mailer, _data("two"), "10.0.0.1")
    with pytest.raises(Conflict):  # refused attempts count too
        _signup(db, settings, mailer, _data("one"), "10.0.0.1")
    with pytest.raises(TooManyRequests) as refused:
        _signup(db, settings, mailer, _data("three"), "10.0.0.1")
    assert refused.value.detail.startswith(ratelimit.SIGNUP_THROTTLED)
    assert 0 < int(refused.value.headers["Retry-After"]) <= settings.signup_window_seconds
    assert len(hashes) == 2  # the throttled sign-up cost no hash either
    _signup(db, settings, mailer, _data("three"), "10.0.0.2")  # other addresses are not affected


def test_sign_up_throttle_over_http_is_429_with_retry_after(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    from zerospeech_api.app import create_app

    settings = make_settings(database_url=db.url, signup_max_per_address=2)
    body = {
        "email": "x@example.org",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "affiliation": "Engines",
        "password": "a long enough password",
    }
    with TestClient(create_app(settings)) as client:
        statuses = [
            client.post(
                "/auth/signup", json={**body, "username": f"user{n}", "email": f"u{n}@x.org"}
            ).status_code
            for n in range(3)
        ]
        refused = client.post("/auth/signup", json={**body, "username": "late"})
    assert statuses == [200, 200, 429]
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert refused.json()["detail"].startswith(ratelimit.SIGNUP_THROTTLED)


# --- logins ----------------------------------------------------------------------------------


@pytest.fixture
def strict(make_settings: Callable[..., Settings], db: Database) -> Settings:
    return make_settings(
        database_url=db.url,
        login_max_failures_account=3,
        login_max_failures_address=5,
        login_max_failures_account_global=6,
    )


def _login(db: Database, settings: Settings, identifier: str, password: str, address: str):
    return service.login(
        db=db, settings=settings, identifier=identifier, password=password, client_address=address
    )


def _fail(db: Database, settings: Settings, identifier: str, address: str) -> None:
    with pytest.raises(Unauthorized):
        _login(db, settings, identifier, "not the password", address)


def test_a_stranger_cannot_lock_the_owner_out_even_of_an_admin_account(
    db: Database, strict: Settings
) -> None:
    make_user(db, strict, username="root", admin=True)
    home = "10.0.0.1"
    _login(db, strict, "root", DEFAULT_PASSWORD, home)  # the owner's usual address
    # One stranger: stopped after 3 guesses, even with the right password...
    for _ in range(3):
        _fail(db, strict, "root", "10.6.6.6")
    with pytest.raises(TooManyRequests, match=re.escape(ratelimit.ACCOUNT_LOCKED)):
        _login(db, strict, "root@example.org", DEFAULT_PASSWORD, "10.6.6.6")
    # ...while the owner logs in from home.
    assert _login(db, strict, "root", DEFAULT_PASSWORD, home).username == "root"
    # Strangers spread over many addresses: past 6 failures in all, new addresses wait...
    for n in range(3):
        _fail(db, strict, "root", f"10.7.7.{n}")
    with pytest.raises(TooManyRequests) as refused:
        _login(db, strict, "root", DEFAULT_PASSWORD, "10.0.0.99")
    assert refused.value.detail.startswith(ratelimit.ACCOUNT_LOCKED_FOR_NEW_ADDRESSES)
    # ...and the owner's addresses do not.
    assert _login(db, strict, "root", DEFAULT_PASSWORD, home).username == "root"


def test_the_owners_address_keeps_working_when_it_is_blocked_for_other_accounts(
    db: Database, strict: Settings
) -> None:
    make_user(db, strict, username="ada")
    make_user(db, strict, username="bob")
    shared = "192.0.2.1"  # one NAT for a lab: ada logged in from it before
    _login(db, strict, "ada", DEFAULT_PASSWORD, shared)
    for n in range(5):
        _fail(db, strict, f"ghost{n}", shared)
    with pytest.raises(TooManyRequests, match=re.escape(ratelimit.ADDRESS_LOCKED)):
        _login(db, strict, "bob", DEFAULT_PASSWORD, shared)  # never seen there
    assert _login(db, strict, "ada", DEFAULT_PASSWORD, shared).username == "ada"
    # Still at most 3 guesses per window on ada's account from that address.
    for _ in range(3):
        _fail(db, strict, "ada", shared)
    with pytest.raises(TooManyRequests, match=re.escape(ratelimit.ACCOUNT_LOCKED)):
        _login(db, strict, "ada", DEFAULT_PASSWORD, shared)


def test_unknown_and_known_accounts_answer_alike_under_a_spread_attack(
    db: Database, strict: Settings
) -> None:
    make_user(db, strict, username="real")
    details = {}
    for name in ("real", "ghost"):
        for n in range(6):
            _fail(db, strict, name, f"10.9.{len(details)}.{n}")
        with pytest.raises(TooManyRequests) as refused:
            _login(db, strict, name, "whatever pw", "10.0.0.77")
        details[name] = refused.value.detail.split(":")[0]
    assert details["real"] == details["ghost"] == ratelimit.ACCOUNT_LOCKED_FOR_NEW_ADDRESSES
