"""`users` commands, run as real subprocesses on a real SQLite database."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import FAST_HASH
from tests.helpers.cli import cli_process
from tests.helpers.factories import bearer, make_user
from tests.helpers.outbox import read_mails
from tests.helpers.server import write_env
from zerospeech_api.accounts import service
from zerospeech_api.cli import users as users_cli
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import User
from zerospeech_api.errors import Unauthorized
from zerospeech_api.security.sessions import authenticate, open_session
from zerospeech_api.settings import Settings, load_settings

PASSWORD = "pa ss word with spaces "  # trailing space kept: only the newline is removed


class Cli:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        values = {
            "ZR_DATA_DIR": str(folder / "data"),
            "ZR_SECRET_KEY": secrets.token_urlsafe(48),
            **{f"ZR_{k.upper()}": str(v) for k, v in FAST_HASH.items()},
        }
        self.env_file = write_env(folder / "test.env", values)
        self.settings: Settings = load_settings(self.env_file)

    def __call__(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return cli_process(self.folder, "users", *args, env_file=self.env_file, input=input)

    def create(self, username: str, *extra: str, password: str = PASSWORD):
        return self(
            "create",
            username,
            "--email",
            f"{username}@example.org",
            "--first-name",
            "Grace",
            "--last-name",
            "Hopper",
            "--affiliation",
            "Navy",
            "--password-stdin",
            *extra,
            input=password + "\n",
        )

    def db(self) -> Database:
        return Database(self.settings.database)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def _migrated_db(cli: Cli) -> Database:
    from zerospeech_api.db.migrate import upgrade

    db = cli.db()
    upgrade(db.engine)
    return db


def test_create_from_stdin_list_show_and_verify(cli: Cli) -> None:
    created = cli.create("grace", "--verified", "--admin")
    assert created.returncode == 0, created.stderr
    assert PASSWORD.strip() not in created.stdout + created.stderr
    assert "admin          yes" in created.stdout
    assert cli.create("alan").returncode == 0  # unverified: a link is mailed
    [mail] = read_mails(cli.settings.data_dir / "outbox")
    assert mail.to == "alan@example.org" and "/page/verify?token=" in mail.link("verify")

    listed = cli("list")
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "USERNAME", "EMAIL", "NAME", "AFFILIATION", "VERIFIED", "ACTIVE", "ADMIN", "CREATED"
    ]  # fmt: skip
    assert rows[0].split()[:8] == [
        "grace", "grace@example.org", "Grace", "Hopper", "Navy", "yes", "yes", "yes"
    ]  # fmt: skip
    assert rows[1].split()[:8] == [
        "alan", "alan@example.org", "Grace", "Hopper", "Navy", "no", "yes", "no"
    ]  # fmt: skip
    assert cli("verify", "alan").stdout.strip() == "alan: verified"
    db = cli.db()
    try:
        for username in ("grace", "alan@example.org"):  # the stdin password works, both verified
            result = service.login(
                db=db,
                settings=cli.settings,
                identifier=username,
                password=PASSWORD,
                client_address=None,
            )
            assert result.token
        with db.transaction(read_only=True) as session:
            user = session.scalar(select(User).where(User.username == "grace"))
        assert user.admin and user.password_hash.startswith("$argon2id$")
    finally:
        db.dispose()
    shown = cli("show", "grace")
    assert "open sessions  1" in shown.stdout and "email          grace@example.org" in shown.stdout


def test_bad_input_exits_non_zero_with_a_message(cli: Cli) -> None:
    db = _migrated_db(cli)
    make_user(db, cli.settings, username="grace")
    db.dispose()
    cases = [
        (cli.create("grace"), service.USERNAME_TAKEN),
        (cli.create("bad name"), "username"),
        (cli.create("shorty", password="short"), "password"),
        (cli.create("nopw", password=""), users_cli.EMPTY_STDIN),
        (cli("show", "nobody"), service.USER_NOT_FOUND),
        (cli("set-password", "nobody", "--password-stdin"), service.USER_NOT_FOUND),
    ]
    for result, message in cases:
        assert result.returncode == 1, result
        assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    # Passwords are never accepted as arguments.
    result = cli("create", "x", "--email", "x@example.org", "--password", "hunter22")
    assert result.returncode == 2 and "No such option" in result.stderr


def test_deactivate_and_set_password_end_sessions(cli: Cli) -> None:
    db = _migrated_db(cli)
    try:
        user = make_user(db, cli.settings, username="ken")
        bearer(db, cli.settings, user)
        with db.transaction() as session:
            token, _ = open_session(
                session=session, settings=cli.settings, user=session.merge(user)
            )
        result = cli("deactivate", "ken")
        assert result.stdout.strip() == "ken: deactivated, 2 session(s) ended"
        with db.transaction(read_only=True) as session, pytest.raises(Unauthorized):
            authenticate(session=session, settings=cli.settings, token=token)
        assert cli("activate", "ken").stdout.strip() == "ken: active"
        bearer(db, cli.settings, user)
        changed = cli("set-password", "ken", "--password-stdin", input="a brand new one\n")
        assert changed.stdout.strip() == "ken: password set, 1 session(s) ended"
        login = service.login(
            db=db,
            settings=cli.settings,
            identifier="ken",
            password="a brand new one",
            client_address=None,
        )
        assert login.username == "ken"
    finally:
        db.dispose()


HOSTILE = "Eve\x1b]0;pwned\x07\x1b[2J\nforged  row  yes\u202e"


def test_user_text_is_printed_with_control_characters_escaped(cli: Cli) -> None:
    """Rows written before control characters were refused (or by another tool) cannot drive
    the operator's terminal or forge table rows."""
    db = _migrated_db(cli)
    try:
        make_user(db, cli.settings, username="eve")
        with db.transaction() as session:
            user = session.scalar(select(User).where(User.username == "eve"))
            user.first_name = user.affiliation = HOSTILE
    finally:
        db.dispose()
    listed, shown = cli("list"), cli("show", "eve")
    for result in (listed, shown):
        assert result.returncode == 0, result.stderr
        for raw in ("\x1b", "\x07", "\u202e"):
            assert raw not in result.stdout
        assert r"Eve\x1b]0;pwned\x07\x1b[2J\nforged  row  yes\u202e" in result.stdout
    assert len(listed.stdout.splitlines()) == 2  # the header and eve, no forged row
    assert len(shown.stdout.splitlines()) == 10  # one line per field


def test_create_refuses_control_characters_in_names(cli: Cli) -> None:
    result = cli.create("eve", "--affiliation", "Lab\x1b[2J")
    assert result.returncode == 1
    assert "affiliation" in result.stderr and "control characters" in result.stderr
    assert "\x1b" not in result.stderr
