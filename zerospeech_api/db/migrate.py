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

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# `revision: str = "0005"` and `down_revision: str | None = "0004"` (or None) in each script
_REVISION = re.compile(
    r"^(?P<key>revision|down_revision)\b[^=\n]*=\s*(?:[\"'](?P<id>[^\"']+)[\"']|None)\s*$",
    re.MULTILINE,
)


@cache
def shipped_head() -> str | None:
    """The newest revision in migrations/versions/, read from the scripts' `revision` and
    `down_revision` lines; None when that is not conclusive (a merge, a branch, an odd line),
    and then alembic decides."""
    revisions: dict[str, str | None] = {}
    for script in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found = {m["key"]: m["id"] for m in _REVISION.finditer(script.read_text("utf-8"))}
        if "revision" not in found or "down_revision" not in found or not found["revision"]:
            return None
        revisions[found["revision"]] = found["down_revision"]
    heads = set(revisions) - set(revisions.values())
    return heads.pop() if len(heads) == 1 else None


def is_up_to_date(engine: Engine) -> bool:
    """True when the database is at the newest shipped revision (one query, no alembic)."""
    head = shipped_head()
    if head is None:
        return False
    try:
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:  # never migrated: no alembic_version table yet
        return False
    return [row[0] for row in versions] == [head]


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and the given database."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision` on the engine's database."""
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
