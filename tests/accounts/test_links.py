"""Mailed links, on SQLite and PostgreSQL: only the newest link works, a password change ends
reset links, and asking for a link does the same work whether or not the account exists."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import event

from tests.helpers.factories import DEFAULT_PASSWORD, make_user
from tests.helpers.outbox import read_mails
from zerospeech_api.accounts import service
from zerospeech_api.db.engine import Database
from zerospeech_api.errors import BadRequest
from zerospeech_api.mail import Mailer, outbox_dir
from zerospeech_api.settings import Settings


@pytest.fixture
def mailer(settings: Settings) -> Iterator[Mailer]:
    m = Mailer(settings)
    yield m
    m.close()


def _ask(
    db: Database,
    settings: Settings,
    mailer: Mailer,
    email: str,
    ask: Callable[..., None] = service.request_password_reset,
) -> None:
    ask(db=db, settings=settings, mailer=mailer, email=email, client_address="10.0.0.1")


def _tokens(mailer: Mailer, settings: Settings, page: str) -> list[str]:
    mailer.close()  # waits for the mail thread
    return [m.token(page) for m in read_mails(outbox_dir(settings)) if f"/page/{page}?" in m.body]


def _reset(db: Database, settings: Settings, token: str, password: str) -> None:
    service.reset_password(db=db, settings=settings, token=token, password=password)


def test_a_newer_reset_link_replaces_the_older_ones(
    db: Database, settings: Settings, mailer: Mailer
) -> None:
    make_user(db, settings, username="ada")
    _ask(db, settings, mailer, "ada@example.org")
    _ask(db, settings, mailer, "ada@example.org")
    older, newer = _tokens(mailer, settings, "reset")
    with pytest.raises(BadRequest, match=re.escape(service.INVALID_LINK)):
        _reset(db, settings, older, "new password 1")
    _reset(db, settings, newer, "new password 2")


def test_a_newer_verification_link_replaces_the_older_ones(
    db: Database, settings: Settings, mailer: Mailer
) -> None:
    make_user(db, settings, username="ada", verified=False)
    _ask(db, settings, mailer, "ada@example.org", ask=service.resend_verification)
    _ask(db, settings, mailer, "ada@example.org", ask=service.resend_verification)
    older, newer = _tokens(mailer, settings, "verify")
    with pytest.raises(BadRequest), db.transaction() as session:
        service.verify_email(session=session, token=older)
    with db.transaction() as session:
        assert service.verify_email(session=session, token=newer).verified


@pytest.mark.parametrize("change", ["by the user", "by an operator", "by another reset"])
def test_changing_the_password_ends_every_reset_link(
    db: Database, settings: Settings, mailer: Mailer, change: str
) -> None:
    make_user(db, settings, username="ada")
    _ask(db, settings, mailer, "ada@example.org")
    [token] = _tokens(mailer, settings, "reset")
    if change == "by the user":
        login = service.login(
            db=db,
            settings=settings,
            identifier="ada",
            password=DEFAULT_PASSWORD,
            client_address="10.0.0.1",
        )
        service.change_password(
            db=db,
            settings=settings,
            bearer=login.token,
            old_password=DEFAULT_PASSWORD,
            password="changed password",
            client_address="10.0.0.1",
        )
    elif change == "by an operator":
        service.set_password(db=db, settings=settings, username="ada", password="set by op 1")
    else:
        _reset(db, settings, token, "reset password 1")
    with pytest.raises(BadRequest, match=re.escape(service.INVALID_LINK)):
        _reset(db, settings, token, "attacker's password")


def _statements_of_this_thread(db: Database) -> tuple[list[str], Any]:
    seen: list[str] = []
    me = threading.get_ident()

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if threading.get_ident() == me:
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    return seen, record


@pytest.mark.parametrize("ask", [service.request_password_reset, service.resend_verification])
def test_asking_for_a_link_does_the_same_work_whether_the_account_exists_or_not(
    db: Database, settings: Settings, mailer: Mailer, ask: Callable[..., None]
) -> None:
    """Counting work, not time: the caller's thread runs the same SQL for an existing account
    and for none, and writes no mail (that happens on the mail thread)."""
    make_user(db, settings, username="ada", verified=False)
    work: dict[str, list[str]] = {}
    composed: list[str] = []
    compose = mailer.compose

    def composing(**kwargs: str) -> EmailMessage:
        if threading.get_ident() == me:
            composed.append(kwargs["to"])
        return compose(**kwargs)

    me = threading.get_ident()
    mailer.compose = composing  # type: ignore[method-assign]
    for email in ("ada@example.org", "nobody@example.org"):
        seen, record = _statements_of_this_thread(db)
        _ask(db, settings, mailer, email, ask=ask)
        event.remove(db.engine, "before_cursor_execute", record)
        work[email] = seen
    assert work["ada@example.org"] == work["nobody@example.org"]
    assert work["ada@example.org"]  # the throttle was counted
    assert composed == []
    mailer.close()
    assert [m.to for m in read_mails(outbox_dir(settings))] == ["ada@example.org"]
