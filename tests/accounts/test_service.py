"""Account services called directly, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select, update

from tests.helpers.factories import DEFAULT_PASSWORD, make_user
from tests.helpers.outbox import read_mails
from zerospeech_api.accounts import service
from zerospeech_api.accounts.schemas import ProfileUpdate, SignupRequest
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import AuthSession, OneTimeToken, TokenPurpose, User, utcnow
from zerospeech_api.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from zerospeech_api.mail import Mailer, outbox_dir
from zerospeech_api.security.passwords import hasher, verify_password
from zerospeech_api.security.sessions import authenticate, open_session, open_session_count
from zerospeech_api.settings import Settings


@pytest.fixture
def mailer(settings: Settings) -> Iterator[Mailer]:
    m = Mailer(settings)
    yield m
    m.close()


def _data(**overrides: str) -> SignupRequest:
    values = {
        "username": "ada",
        "email": "Ada@Example.org",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "affiliation": "Analytical Engines",
        "password": "a long enough password",
        **overrides,
    }
    return SignupRequest(**values)


def _signup(
    db: Database, settings: Settings, mailer: Mailer, address: str = "1.2.3.4", **overrides: str
) -> User:
    return service.signup(
        db=db, settings=settings, mailer=mailer, data=_data(**overrides), client_address=address
    )


def _flush_mail(mailer: Mailer, settings: Settings) -> list:
    mailer.close()  # waits for the background sends
    return read_mails(outbox_dir(settings))


def _login(db: Database, settings: Settings, identifier: str, password: str, address="1.2.3.4"):
    return service.login(
        db=db, settings=settings, identifier=identifier, password=password, client_address=address
    )


def test_signup_stores_an_argon2id_hash_and_mails_a_hashed_one_time_link(
    db: Database, settings: Settings, mailer: Mailer
) -> None:
    user = _signup(db, settings, mailer)
    assert user.email == "Ada@example.org"  # the domain normalised, as email-validator does
    assert user.password_hash.startswith("$argon2id$")
    assert not user.verified and user.active and not user.admin
    [mail] = _flush_mail(mailer, settings)
    assert mail.to == "Ada@example.org"
    assert mail.link("verify").startswith("http://testserver/page/verify?token=")
    token = mail.token("verify")
    with db.transaction(read_only=True) as session:
        row = session.scalar(select(OneTimeToken))
    assert row.purpose == TokenPurpose.VERIFY and row.user_id == user.id
    assert row.token_hash != token and token not in row.token_hash
    lifetime = row.expires_at - row.created_at
    assert lifetime == dt.timedelta(hours=settings.verify_token_hours)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"username": "ADA", "email": "other@example.org"}, service.USERNAME_TAKEN),
        ({"username": "other", "email": "ada@EXAMPLE.org"}, service.EMAIL_TAKEN),
        ({"username": "other", "email": "ADA@example.org"}, service.EMAIL_TAKEN),
    ],
)
def test_duplicates_in_any_case_are_a_conflict(
    db: Database, settings: Settings, mailer: Mailer, overrides: dict, message: str
) -> None:
    _signup(db, settings, mailer)
    with pytest.raises(Conflict, match=message):
        _signup(db, settings, mailer, **overrides)


def test_verification_works_once(db: Database, settings: Settings, mailer: Mailer) -> None:
    _signup(db, settings, mailer)
    token = _flush_mail(mailer, settings)[0].token("verify")
    with pytest.raises(Forbidden, match=re.escape(service.NOT_VERIFIED)):
        _login(db, settings, "ada", "a long enough password")
    with db.transaction() as session:
        assert service.verify_email(session=session, token=token).verified
    with (
        pytest.raises(BadRequest, match=re.escape(service.INVALID_LINK)),
        db.transaction() as session,
    ):
        service.verify_email(session=session, token=token)
    assert _login(db, settings, "ada", "a long enough password").username == "ada"


def test_expired_or_wrong_purpose_tokens_are_refused(
    db: Database, settings: Settings, mailer: Mailer
) -> None:
    _signup(db, settings, mailer)
    token = _flush_mail(mailer, settings)[0].token("verify")
    with db.transaction() as session:  # a verify token is no reset token
        session.execute(update(OneTimeToken).values(expires_at=utcnow() + dt.timedelta(days=9)))
    with pytest.raises(BadRequest, match=re.escape(service.INVALID_LINK)):
        service.reset_password(db=db, settings=settings, token=token, password="new password 1")
    with db.transaction() as session:
        session.execute(update(OneTimeToken).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    with (
        pytest.raises(BadRequest, match=re.escape(service.INVALID_LINK)),
        db.transaction() as session,
    ):
        service.verify_email(session=session, token=token)


def test_login_by_username_or_any_case_email_opens_a_session(
    db: Database, settings: Settings
) -> None:
    user = make_user(db, settings, username="bob", email="Bob@example.org")
    for identifier in ("bob", "bob@example.org", "BOB@EXAMPLE.ORG"):
        result = _login(db, settings, identifier, DEFAULT_PASSWORD)
        assert result.username == "bob"
        with db.transaction(read_only=True) as session:
            found, _ = authenticate(session=session, settings=settings, token=result.token)
        assert found.id == user.id
        lifetime = result.expires_at - dt.datetime.now(dt.UTC)
        assert dt.timedelta(days=settings.token_lifetime_days - 1) < lifetime
    with pytest.raises(Unauthorized, match=re.escape(service.BAD_CREDENTIALS)):
        _login(db, settings, "Bob", DEFAULT_PASSWORD)  # usernames are exact


@pytest.mark.parametrize(
    ("identifier", "password"),
    [("bob", "wrong password"), ("nobody", DEFAULT_PASSWORD), ("no@example.org", "x")],
)
def test_wrong_credentials_are_unauthorized_alike(
    db: Database, settings: Settings, identifier: str, password: str
) -> None:
    make_user(db, settings, username="bob")
    with pytest.raises(Unauthorized) as refused:
        _login(db, settings, identifier, password)
    assert refused.value.detail == service.BAD_CREDENTIALS


def test_inactive_and_unverified_users_are_told_why_only_with_the_right_password(
    db: Database, settings: Settings
) -> None:
    make_user(db, settings, username="gone", active=False)
    make_user(db, settings, username="fresh", verified=False)
    with pytest.raises(Forbidden, match=re.escape(service.INACTIVE)):
        _login(db, settings, "gone", DEFAULT_PASSWORD)
    with pytest.raises(Forbidden, match=re.escape(service.NOT_VERIFIED)):
        _login(db, settings, "fresh", DEFAULT_PASSWORD)
    with pytest.raises(Unauthorized):
        _login(db, settings, "gone", "wrong password")


def test_login_rehashes_a_hash_made_with_older_parameters(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    weak = make_settings(database_url=db.url, argon2_time_cost=1, argon2_memory_kib=8192)
    strong = make_settings(database_url=db.url, argon2_time_cost=2, argon2_memory_kib=9216)
    make_user(db, weak, username="old")
    _login(db, strong, "old", DEFAULT_PASSWORD)
    with db.transaction(read_only=True) as session:
        stored = session.scalar(select(User.password_hash).where(User.username == "old"))
    assert "m=9216,t=2" in stored
    assert verify_password(hasher(2, 9216, 1), stored, DEFAULT_PASSWORD)


def test_failures_lock_the_account_and_success_clears_them(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    settings = make_settings(database_url=db.url, login_max_failures_account=3)
    make_user(db, settings, username="carol")
    for _ in range(2):
        with pytest.raises(Unauthorized):
            _login(db, settings, "carol", "wrong password")
    _login(db, settings, "carol", DEFAULT_PASSWORD)  # clears
    for _ in range(3):
        with pytest.raises(Unauthorized):
            _login(db, settings, "carol@example.org", "wrong password")  # same account by e-mail
    with pytest.raises(TooManyRequests) as refused:
        _login(db, settings, "carol", DEFAULT_PASSWORD)  # even the right password now
    assert 0 < int(refused.value.headers["Retry-After"]) <= settings.login_window_seconds


def test_unknown_accounts_lock_like_known_ones(
    make_settings: Callable[..., Settings], db: Database
) -> None:
    settings = make_settings(database_url=db.url, login_max_failures_account=2)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            _login(db, settings, "ghost", "whatever1")
    with pytest.raises(TooManyRequests):
        _login(db, settings, "ghost", "whatever1")


def test_logout_revokes_only_that_session(db: Database, settings: Settings) -> None:
    make_user(db, settings, username="dan")
    first = _login(db, settings, "dan", DEFAULT_PASSWORD)
    second = _login(db, settings, "dan", DEFAULT_PASSWORD)
    with db.transaction() as session:
        _, jti = authenticate(session=session, settings=settings, token=first.token)
        service.logout(session=session, jti=jti)
    with db.transaction(read_only=True) as session:
        with pytest.raises(Unauthorized):
            authenticate(session=session, settings=settings, token=first.token)
        authenticate(session=session, settings=settings, token=second.token)


def _ask_reset(db: Database, settings: Settings, mailer: Mailer, email: str) -> None:
    service.request_password_reset(
        db=db, settings=settings, mailer=mailer, email=email, client_address="127.0.0.1"
    )


def test_reset_request_for_unknown_address_sends_nothing(
    db: Database, settings: Settings, mailer: Mailer
) -> None:
    _ask_reset(db, settings, mailer, "nobody@example.org")
    assert _flush_mail(mailer, settings) == []


def test_reset_sets_the_password_once_verifies_and_ends_every_session(
    db: Database, settings: Settings, mailer: Mailer
) -> None:
    user = make_user(db, settings, username="eve", verified=False)
    with db.transaction() as session:
        open_session(session=session, settings=settings, user=session.merge(user))
    _ask_reset(db, settings, mailer, "EVE@example.org")
    [mail] = _flush_mail(mailer, settings)
    token = mail.token("reset")
    with db.transaction(read_only=True) as session:
        row = session.scalar(select(OneTimeToken).where(OneTimeToken.purpose == TokenPurpose.RESET))
    assert row.expires_at - row.created_at == dt.timedelta(minutes=settings.reset_token_minutes)
    service.reset_password(db=db, settings=settings, token=token, password="brand new pw")
    with db.transaction(read_only=True) as session:
        assert open_session_count(session=session, user_id=user.id) == 0
    assert _login(db, settings, "eve", "brand new pw").username == "eve"  # now verified too
    with pytest.raises(BadRequest, match=re.escape(service.INVALID_LINK)):
        service.reset_password(db=db, settings=settings, token=token, password="another pw 2")


def test_change_password_needs_the_old_one_and_ends_every_session(
    db: Database, settings: Settings
) -> None:
    make_user(db, settings, username="fay")
    token = _login(db, settings, "fay", DEFAULT_PASSWORD).token
    other = _login(db, settings, "fay", DEFAULT_PASSWORD).token
    common = {"db": db, "settings": settings, "bearer": token, "client_address": "1.2.3.4"}
    with pytest.raises(BadRequest, match="old_password"):
        service.change_password(**common, old_password="not it at all", password="new pw 123")
    service.change_password(**common, old_password=DEFAULT_PASSWORD, password="new pw 123")
    with db.transaction(read_only=True) as session:
        for old in (token, other):
            with pytest.raises(Unauthorized):
                authenticate(session=session, settings=settings, token=old)
    with pytest.raises(Unauthorized):
        _login(db, settings, "fay", DEFAULT_PASSWORD)
    _login(db, settings, "fay", "new pw 123")


def test_deactivation_ends_sessions_and_blocks_login(db: Database, settings: Settings) -> None:
    make_user(db, settings, username="gus")
    token = _login(db, settings, "gus", DEFAULT_PASSWORD).token
    with db.transaction() as session:
        _, ended = service.set_active(session=session, username="gus", active=False)
    assert ended == 1
    with db.transaction(read_only=True) as session, pytest.raises(Unauthorized):
        authenticate(session=session, settings=settings, token=token)
    with pytest.raises(Forbidden, match=re.escape(service.INACTIVE)):
        _login(db, settings, "gus", DEFAULT_PASSWORD)


def test_profile_update_changes_only_what_is_given(db: Database, settings: Settings) -> None:
    make_user(db, settings, username="hal")
    with db.transaction() as session:
        user = service.update_profile(
            session=session, username="hal", changes=ProfileUpdate(affiliation="  New Lab ")
        )
    assert (user.first_name, user.affiliation) == ("Ada", "New Lab")
    with pytest.raises(NotFound), db.transaction() as session:
        service.update_profile(
            session=session, username="nope", changes=ProfileUpdate(last_name="X")
        )


def test_set_password_ends_sessions(db: Database, settings: Settings) -> None:
    make_user(db, settings, username="ivy")
    _login(db, settings, "ivy", DEFAULT_PASSWORD)
    assert (
        service.set_password(db=db, settings=settings, username="ivy", password="pw set by op") == 1
    )
    _login(db, settings, "ivy", "pw set by op")
    with db.transaction(read_only=True) as session:
        sessions = session.scalars(select(AuthSession)).all()
    assert [s.revoked_at is None for s in sessions].count(True) == 1
