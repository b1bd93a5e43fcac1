"""Operations: `init`, `migrate`, `check`."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import click
from sqlalchemy import text

from zerospeech_api.cli.context import CliContext, pass_ctx
from zerospeech_api.cli.output import fail, fields
from zerospeech_api.settings import ENV_PREFIX, env_file_path


def _ensure_secret(env_path: Path) -> bool:
    """Append a generated ZR_SECRET_KEY to the .env file unless one is set; True if written."""
    existing = env_path.read_text(encoding="utf-8") if env_path.is_file() else ""
    for line in existing.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == f"{ENV_PREFIX}SECRET_KEY" and value.strip().strip("'\""):
            return False
    if os.environ.get(f"{ENV_PREFIX}SECRET_KEY"):
        return False
    env_path.parent.mkdir(parents=True, exist_ok=True)
    prefix = "" if not existing or existing.endswith("\n") else "\n"
    with open(env_path, "a", encoding="utf-8") as handle:
        handle.write(f"{prefix}{ENV_PREFIX}SECRET_KEY={secrets.token_urlsafe(48)}\n")
    os.chmod(env_path, 0o600)
    return True


@click.command()
@click.pass_context
def init(click_ctx: click.Context) -> None:
    """Create the data folder, a secret in .env (if none), the schema and the built-in rows."""
    from zerospeech_api.bootstrap import ensure_builtin_rows

    ctx: CliContext = click_ctx.obj
    env_path = env_file_path(ctx.env_file)
    if _ensure_secret(env_path):
        click.echo(f"wrote a new {ENV_PREFIX}SECRET_KEY to {env_path}")
    ctx._settings = None  # re-read: the secret may be new
    settings = ctx.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with ctx.db.transaction() as session:
        for line in ensure_builtin_rows(session=session):
            click.echo(f"created {line}")
    database = settings.public_items()["database_url"] or "sqlite (embedded)"
    click.echo(f"ready: data in {settings.data_dir.resolve()}, database {database}")


@click.command()
@pass_ctx
def migrate(ctx: CliContext) -> None:
    """Apply database migrations up to the newest schema."""
    from zerospeech_api.db.migrate import current_revision, head_revision

    db = ctx.db  # migrates
    click.echo(f"database at revision {current_revision(db.engine)} (head {head_revision()})")


@click.command()
@pass_ctx
def check(ctx: CliContext) -> None:
    """Validate settings, database and data folder; print the effective configuration."""
    from zerospeech_api.db.engine import Database
    from zerospeech_api.db.migrate import current_revision, head_revision

    settings = ctx.settings
    fields(sorted(settings.public_items().items()))
    problems: list[str] = []
    if not settings.secret_key.get_secret_value():
        problems.append(f"{ENV_PREFIX}SECRET_KEY is not set (run init)")
    if not settings.data_dir.is_dir():
        problems.append(f"data folder {settings.data_dir} does not exist (run init)")
    elif not os.access(settings.data_dir, os.W_OK):
        problems.append(f"data folder {settings.data_dir} is not writable")
    try:
        db = Database(settings.database)
        with db.session(read_only=True) as session:
            session.execute(text("SELECT 1"))
        revision, head = current_revision(db.engine), head_revision()
        if revision != head:
            problems.append(f"database at revision {revision}, code expects {head} (run migrate)")
        db.dispose()
    except Exception as exc:
        problems.append(f"database unreachable: {type(exc).__name__}")
    if problems:
        fail("; ".join(problems))
    click.echo("check: ok")


COMMANDS = (init, migrate, check)
