"""`users` admin commands: create, list, show, verify, activate, deactivate, set-password.

Passwords come from a hidden prompt (typed twice) or from stdin (`--password-stdin`), never from
the command line, where other users of the machine could read them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from zerospeech_api.accounts import service
from zerospeech_api.accounts.schemas import Password, SignupRequest
from zerospeech_api.cli.context import CliContext, pass_ctx
from zerospeech_api.cli.output import domain_errors, fail, fields, printable, table, yes_no
from zerospeech_api.db.tables import User
from zerospeech_api.errors import validation_lines
from zerospeech_api.security.sessions import open_session_count

EMPTY_STDIN = "no password on stdin"
PASSWORDS_DIFFER = "the two passwords differ"


@contextmanager
def _errors_to_exit() -> Iterator[None]:
    """Domain and validation errors become `error: ...` on stderr and exit status 1."""
    with domain_errors():
        try:
            yield
        except ValidationError as exc:
            fail("; ".join(validation_lines(exc.errors())))


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line; only the line ending is removed (spaces may be part of a password).
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail(EMPTY_STDIN)
    else:
        password = click.prompt("Password", hide_input=True)
        if click.prompt("Password again", hide_input=True) != password:
            fail(PASSWORDS_DIFFER)
    try:
        TypeAdapter(Password).validate_python(password)
    except ValidationError as exc:
        fail(f"password: {exc.errors()[0]['msg']}")
    return password


def _show(session: Session, user: User) -> None:
    fields(
        [
            ("username", user.username),
            ("email", user.email),
            ("first name", user.first_name),
            ("last name", user.last_name),
            ("affiliation", user.affiliation),
            ("verified", yes_no(user.verified)),
            ("active", yes_no(user.active)),
            ("admin", yes_no(user.admin)),
            ("created", user.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
            ("open sessions", open_session_count(session=session, user_id=user.id)),
        ]
    )


password_stdin = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)


@click.group(name="users")
def group() -> None:
    """Manage users."""


@group.command()
@click.argument("username")
@click.option("--email", required=True, help="E-mail address.")
@click.option("--first-name", required=True)
@click.option("--last-name", required=True)
@click.option("--affiliation", required=True)
@password_stdin
@click.option("--verified", is_flag=True, help="Mark verified (else a verification mail is sent).")
@click.option("--admin", is_flag=True, help="Make an administrator.")
@pass_ctx
def create(
    ctx: CliContext,
    username: str,
    email: str,
    first_name: str,
    last_name: str,
    affiliation: str,
    password_stdin: bool,
    verified: bool,
    admin: bool,
) -> None:
    """Create a user (password from a prompt, or stdin with --password-stdin)."""
    from zerospeech_api.mail import Mailer

    password = _read_password(password_stdin)
    with _errors_to_exit():
        data = SignupRequest(
            username=username,
            email=email,
            first_name=first_name,
            last_name=last_name,
            affiliation=affiliation,
            password=password,
        )
        mailer = Mailer(ctx.settings)
        try:
            user = service.create_user(
                db=ctx.db,
                settings=ctx.settings,
                data=data,
                verified=verified,
                admin=admin,
                mailer=None if verified else mailer,
            )
        finally:
            mailer.close()  # waits until the mail is written or sent
    with ctx.db.transaction(read_only=True) as session:
        _show(session, user)
    if not verified:
        click.echo(f"a verification link was mailed to {printable(user.email)}")


@group.command(name="list")
@pass_ctx
def list_(ctx: CliContext) -> None:
    """List all users."""
    with ctx.db.transaction(read_only=True) as session:
        users = service.list_users(session=session)
    table(
        ["username", "email", "name", "affiliation", "verified", "active", "admin", "created"],
        [
            (
                u.username,
                u.email,
                f"{u.first_name} {u.last_name}",
                u.affiliation,
                yes_no(u.verified),
                yes_no(u.active),
                yes_no(u.admin),
                u.created_at.strftime("%Y-%m-%d %H:%M"),
            )
            for u in users
        ],
    )


@group.command()
@click.argument("username")
@pass_ctx
def show(ctx: CliContext, username: str) -> None:
    """Show one user."""
    with _errors_to_exit(), ctx.db.transaction(read_only=True) as session:
        _show(session, service.get_user(session=session, username=username))


@group.command()
@click.argument("username")
@pass_ctx
def verify(ctx: CliContext, username: str) -> None:
    """Mark a user's e-mail address verified (they can log in)."""
    with _errors_to_exit(), ctx.db.transaction() as session:
        service.set_verified(session=session, username=username)
    click.echo(f"{printable(username)}: verified")


@group.command()
@click.argument("username")
@pass_ctx
def deactivate(ctx: CliContext, username: str) -> None:
    """Deactivate a user: no more logins, and every session ends now."""
    with _errors_to_exit(), ctx.db.transaction() as session:
        _, ended = service.set_active(session=session, username=username, active=False)
    click.echo(f"{printable(username)}: deactivated, {ended} session(s) ended")


@group.command()
@click.argument("username")
@pass_ctx
def activate(ctx: CliContext, username: str) -> None:
    """Re-activate a deactivated user."""
    with _errors_to_exit(), ctx.db.transaction() as session:
        service.set_active(session=session, username=username, active=True)
    click.echo(f"{printable(username)}: active")


@group.command(name="set-password")
@click.argument("username")
@password_stdin
@pass_ctx
def set_password(ctx: CliContext, username: str, password_stdin: bool) -> None:
    """Set a user's password (prompt, or stdin); every session of the user ends."""
    with _errors_to_exit(), ctx.db.transaction(read_only=True) as session:
        service.get_user(session=session, username=username)  # fail before asking
    password = _read_password(password_stdin)
    with _errors_to_exit():
        ended = service.set_password(
            db=ctx.db, settings=ctx.settings, username=username, password=password
        )
    click.echo(f"{printable(username)}: password set, {ended} session(s) ended")
