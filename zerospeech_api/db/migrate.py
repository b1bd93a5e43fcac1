"""Alembic upgrade/current with the script location inside the package (works from the pyz).

Every command migrates first; when the database is already at the newest revision (nearly
always), that is found with one query and without importing alembic, which is a good part of
a start-up's time (alembic, mako, the migration scripts, its plugin entry points).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from zerospeech_api.files import package_path

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = package_path("zerospeech_api.db", "migrations")
# `revision: str = "0005"` and `down_revision: str | None = "0004"` (or None) in each script
_REVISION = re.compile(
    r"^(?P<key>revision|down_revision)\b[^=\n]*=\s*(?:[\"'](?P<id>[^\"']+)[\"']|None)\s*$",
    re.MULTILINE,
)


MIGRATE_LOCK = "zerospeech:migrate"
SCHEMA_TOO_NEW = (
    "the database schema is at revision {found}, newer than this build of zerospeech-api knows "
    "(its newest is {head}): another host was upgraded; install the same new version here"
)


class SchemaTooNew(Exception):
    """The database was migrated by a newer build; this one must not run against it."""


@cache
def shipped_revisions() -> dict[str, str | None]:
    """Every revision in migrations/versions/ with its `down_revision`, read from the scripts'
    lines (no alembic); empty when a script is not conclusive (an odd line)."""
    revisions: dict[str, str | None] = {}
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found = {m["key"]: m["id"] for m in _REVISION.finditer(script.read_text("utf-8"))}
        if "revision" not in found or "down_revision" not in found or not found["revision"]:
            return {}
        revisions[found["revision"]] = found["down_revision"]
    return revisions


def shipped_head() -> str | None:
    """The newest revision in migrations/versions/; None when that is not conclusive (a merge,
    a branch, an odd line), and then alembic decides."""
    revisions = shipped_revisions()
    heads = set(revisions) - set(revisions.values())
    return heads.pop() if len(heads) == 1 else None


def database_revisions(engine: Engine) -> list[str] | None:
    """The revisions recorded in the database (None when it was never migrated)."""
    try:
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:  # never migrated: no alembic_version table yet
        return None
    return [str(row[0]) for row in versions]


def refuse_newer_schema(versions: list[str] | None) -> None:
    """`SchemaTooNew` when the database is at a revision this build does not ship."""
    known = shipped_revisions()
    unknown = [v for v in versions or [] if known and v not in known]
    if unknown:
        raise SchemaTooNew(SCHEMA_TOO_NEW.format(found=unknown[0], head=shipped_head()))


def is_up_to_date(engine: Engine) -> bool:
    """True when the database is at the newest shipped revision (one query, no alembic);
    `SchemaTooNew` when it is past it."""
    head = shipped_head()
    versions = database_revisions(engine)
    refuse_newer_schema(versions)
    return head is not None and versions == [head]


def _lock_file(engine: Engine) -> Path | None:
    """SQLite: a lock file beside the database file (None in memory)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(f"{database}.migrate.lock")


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and the given database."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision` on the engine's database, once: under the database's
    migration lock (every host, every process), checked again once it is held. `SchemaTooNew`
    when a newer build already migrated it."""
    if revision == "head" and is_up_to_date(engine):
        return
    from zerospeech_api.db.cluster import named_lock

    with named_lock(engine, MIGRATE_LOCK, lock_file=_lock_file(engine)):
        # Whoever held the lock before us may have done it all already.
        if revision == "head" and is_up_to_date(engine):
            return
        from alembic import command

        config = alembic_config(engine.url.render_as_string(hide_password=False))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None when never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped with this code."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
