"""The start-up check: a database at the newest revision is recognised without alembic."""

from __future__ import annotations

import subprocess
import sys

from zerospeech_api.db.engine import Database
from zerospeech_api.db.migrate import (
    current_revision,
    head_revision,
    is_up_to_date,
    shipped_head,
    upgrade,
)

UPGRADE_AND_LIST_MODULES = """
import sys
from zerospeech_api.db.engine import Database
from zerospeech_api.db.migrate import upgrade
db = Database(sys.argv[1])
upgrade(db.engine)
db.dispose()
print(sorted(name for name in sys.modules if name.split(".")[0] in ("alembic", "mako")))
"""


def test_the_shipped_head_read_from_the_scripts_is_alembics() -> None:
    assert shipped_head() == head_revision()


def test_an_up_to_date_database_is_checked_without_importing_alembic(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert not is_up_to_date(db.engine)  # never migrated: no alembic_version table
        upgrade(db.engine)
        assert is_up_to_date(db.engine)
    finally:
        db.dispose()
    result = subprocess.run(
        [sys.executable, "-c", UPGRADE_AND_LIST_MODULES, database_url],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_an_older_database_is_still_migrated_by_alembic(database_url: str) -> None:
    db = Database(database_url)
    try:
        upgrade(db.engine, "0005")
        assert not is_up_to_date(db.engine)
        upgrade(db.engine)
        assert current_revision(db.engine) == head_revision()
        assert is_up_to_date(db.engine)
    finally:
        db.dispose()
