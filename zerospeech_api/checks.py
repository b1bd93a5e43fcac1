"""The server's checks in one place: GET /health answers `database_health`, and `check` runs
`problems`, which includes it."""

from __future__ import annotations

import os

from sqlalchemy import text

from zerospeech_api.db.engine import Database
from zerospeech_api.settings import ENV_PREFIX, Settings


def database_health(*, db: Database) -> dict[str, str]:
    """`{"status": "ok", "database": <dialect>}` once the database answered a query; raises
    the driver's error when it cannot."""
    with db.session(read_only=True) as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok", "database": db.engine.dialect.name}


OUTBOX_WITH_POSTGRES = (
    f"{ENV_PREFIX}SMTP_HOST is not set, so mail goes to .eml files in <data>/outbox; with "
    "PostgreSQL, i.e. possibly several hosts, set a real SMTP server: participants never see "
    "the outbox"
)


def warnings(*, settings: Settings) -> list[str]:
    """What works but is probably not meant (`check` prints it and still succeeds)."""
    found: list[str] = []
    if not settings.smtp_host and settings.uses_postgres:
        found.append(OUTBOX_WITH_POSTGRES)
    return found


def problems(*, settings: Settings) -> list[str]:
    """What keeps these settings from serving (empty when nothing): the secret, the data folder,
    `database_health` and the schema revision, each with the command that fixes it."""
    # Imported here: alembic is not needed by a server process, only by migrate and check.
    from zerospeech_api.db.migrate import current_revision, head_revision

    found: list[str] = []
    if not settings.secret_key.get_secret_value():
        found.append(f"{ENV_PREFIX}SECRET_KEY is not set (run init)")
    if not settings.data_dir.is_dir():
        found.append(f"data folder {settings.data_dir} does not exist (run init)")
    elif not os.access(settings.data_dir, os.W_OK):
        found.append(f"data folder {settings.data_dir} is not writable")
    try:
        db = Database(settings.database)
        try:
            database_health(db=db)
            revision, head = current_revision(db.engine), head_revision()
        finally:
            db.dispose()
        if revision != head:
            found.append(f"database at revision {revision}, code expects {head} (run migrate)")
    except Exception as exc:  # whatever the driver raises: named, never a traceback
        found.append(f"database unreachable: {type(exc).__name__}")
    return found
