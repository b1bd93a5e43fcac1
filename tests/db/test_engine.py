"""The engine: SQLite pragmas, and concurrent writers from several processes never fail."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from sqlalchemy import text

from zerospeech_api.db.engine import Database
from zerospeech_api.db.migrate import upgrade
from zerospeech_api.db.tables import Evaluator

WRITERS = 4
INCREMENTS = 40


def test_sqlite_pragmas(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    with db.session(read_only=True) as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert session.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
    db.dispose()


def _increment(url: str, count: int) -> None:
    db = Database(url)
    for _ in range(count):
        # Read, then write in the same transaction: the pattern that fails with
        # "database is locked" when transactions start deferred.
        with db.transaction() as session:
            row = session.get(Evaluator, 1)
            assert row is not None
            row.timeout_seconds = (row.timeout_seconds or 0) + 1
    db.dispose()


def test_concurrent_read_modify_write_from_processes_loses_nothing(database_url: str) -> None:
    db = Database(database_url)
    upgrade(db.engine)
    with db.transaction() as session:
        session.add(Evaluator(id=1, name="counter", kind="command", timeout_seconds=0))
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_increment, args=(database_url, INCREMENTS)) for _ in range(WRITERS)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0] * WRITERS
    with db.session(read_only=True) as session:
        value = session.get(Evaluator, 1).timeout_seconds  # type: ignore[union-attr]
    db.dispose()
    if database_url.startswith("sqlite"):
        assert value == WRITERS * INCREMENTS  # immediate transactions serialise writers
    else:
        assert 0 < value <= WRITERS * INCREMENTS  # PostgreSQL: read committed may interleave
