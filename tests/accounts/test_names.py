"""Usernames and e-mail addresses are unique in any letter case, any script, enforced by the
database (unique indexes on the normalised keys) on SQLite and PostgreSQL, old rows included."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from tests.helpers.factories import DEFAULT_PASSWORD, make_user
from zerospeech_api.accounts import service
from zerospeech_api.accounts.schemas import SignupRequest
from zerospeech_api.db.engine import Database
from zerospeech_api.db.keys import name_key
from zerospeech_api.db.migrate import upgrade
from zerospeech_api.db.tables import AuthSession, User, utcnow
from zerospeech_api.errors import Conflict
from zerospeech_api.mail import Mailer
from zerospeech_api.settings import Settings


@pytest.fixture
def mailer(settings: Settings) -> Iterator[Mailer]:
    m = Mailer(settings)
    yield m
    m.close()


def _data(username: str, email: str) -> SignupRequest:
    return SignupRequest(
        username=username,
        email=email,
        first_name="Élodie",
        last_name="Martin",
        affiliation="Lab",
        password="a long enough password",
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"username": "Ada"}, {"username": "ada"}),
        ({"email": "ÉLODIE@example.org"}, {"email": "élodie@example.org"}),
        ({"email": "STRASSE@example.org"}, {"email": "straße@example.org"}),
    ],
)
def test_the_database_refuses_names_that_differ_only_in_case(
    db: Database, settings: Settings, first: dict, second: dict
) -> None:
    make_user(db, settings, **{"username": "one", "email": "one@example.org", **first})
    with pytest.raises(IntegrityError):
        make_user(db, settings, **{"username": "two", "email": "two@example.org", **second})


def test_sign_up_with_a_non_ascii_case_twin_of_an_address_is_409(
    db: Database, settings: Settings, mailer: Mailer
) -> None:
    service.signup(
        db=db,
        settings=settings,
        mailer=mailer,
        data=_data("elodie", "ÉLODIE@example.org"),
        client_address="10.0.0.1",
    )
    with pytest.raises(Conflict, match=service.EMAIL_TAKEN):
        service.signup(
            db=db,
            settings=settings,
            mailer=mailer,
            data=_data("elodie2", "élodie@example.org"),
            client_address="10.0.0.1",
        )


def test_login_by_address_in_another_case_of_another_script(
    db: Database, settings: Settings
) -> None:
    make_user(db, settings, username="elodie", email="ÉLODIE@example.org")
    for identifier in ("élodie@example.org", "E\u0301LODIE@EXAMPLE.ORG"):
        result = service.login(
            db=db,
            settings=settings,
            identifier=identifier,
            password=DEFAULT_PASSWORD,
            client_address="10.0.0.1",
        )
        assert result.username == "elodie"


def test_concurrent_sign_ups_of_case_twins_make_one_account(
    db: Database, settings: Settings, mailer: Mailer
) -> None:
    """Each sign-up checks the name, hashes, then inserts: all may pass the check before any
    inserts. The unique index decides, and the losers are told which name was taken."""
    names = ["Twin", "twin", "TWIN", "tWin", "twIN", "TwIn"]
    barrier = threading.Barrier(len(names))
    outcomes: list[str] = []

    def sign_up(n: int, name: str) -> None:
        barrier.wait()
        try:
            service.create_user(db=db, settings=settings, data=_data(name, f"u{n}@example.org"))
            outcomes.append("created")
        except Conflict as exc:
            outcomes.append(exc.detail)

    threads = [threading.Thread(target=sign_up, args=(n, name)) for n, name in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] + [service.USERNAME_TAKEN] * (len(names) - 1)
    with db.transaction(read_only=True) as session:
        count = session.scalar(select(func.count()).where(User.username_key == "twin"))
    assert count == 1


def test_migration_fills_the_keys_of_existing_accounts_and_keeps_old_twins(
    database_url: str, make_settings: Callable[..., Settings]
) -> None:
    db = Database(database_url)
    try:
        upgrade(db.engine, "0001")
        rows = [
            ("ada", "Ada@example.org"),
            ("ELODIE", "ÉLODIE@example.org"),
            ("elodie", "élodie@example.org"),  # made before uniqueness was checked
        ]
        # The columns of revision 0001 only: plain SQL, not the current table.
        add_user = text(
            "INSERT INTO users (username, email, first_name, last_name, affiliation,"
            " password_hash, verified, active, admin, created_at)"
            " VALUES (:u, :e, 'F', 'L', 'A', 'x', true, true, false, :t)"
        )
        with db.engine.begin() as connection:
            for username, email in rows:
                connection.execute(add_user.bindparams(u=username, e=email, t=utcnow()))
            twin_id = connection.scalar(text("SELECT id FROM users WHERE username = 'elodie'"))
            connection.execute(
                text(
                    "INSERT INTO auth_sessions (jti, user_id, created_at, expires_at) "
                    "VALUES ('j1', :u, :t, :t)"
                ).bindparams(u=twin_id, t=utcnow())
            )
        upgrade(db.engine)
        with db.transaction(read_only=True) as session:
            keys = {
                u.username: (u.username_key, u.email_key) for u in session.scalars(select(User))
            }
            sessions = session.scalar(select(func.count()).select_from(AuthSession))
        assert keys["ada"] == ("ada", "ada@example.org")
        assert keys["ELODIE"] == ("elodie", name_key("élodie@example.org"))
        # The younger twin keeps its account (and sessions), under a key no real name has.
        assert keys["elodie"] == (
            f"elodie #{twin_id}",
            f"{name_key('élodie@example.org')} #{twin_id}",
        )
        assert sessions == 1
        with pytest.raises(IntegrityError):
            make_user(db, make_settings(), username="ADA", email="new@example.org")
    finally:
        db.dispose()
