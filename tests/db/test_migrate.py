"""Migrations: the same revisions build the schema on SQLite and PostgreSQL, matching tables.py."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from zerospeech_api.db.engine import Database
from zerospeech_api.db.migrate import current_revision, head_revision, upgrade
from zerospeech_api.db.tables import Base


def test_upgrade_reaches_head_and_matches_the_tables(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert current_revision(db.engine) is None
        upgrade(db.engine)
        assert current_revision(db.engine) == head_revision()
        upgrade(db.engine)  # idempotent
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == [], f"tables.py and the migrations disagree: {diff}"
    finally:
        db.dispose()
