"""The engine: SQLite pragmas, concurrent writers from several processes never fail, bounded
waits that count as overload, and read-only transactions in read-write sessions."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tests.helpers.burst import writers_blocked
from zerospeech_api.db.engine import Database, PoolLimits, is_overloaded, reads_only
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


def test_pool_timeout_and_lock_waits_are_overload_other_errors_are_not(
    database_url: str,
) -> None:
    db = Database(database_url, PoolLimits(size=1, overflow=0, wait_seconds=0.2))
    upgrade(db.engine)
    try:
        with db.engine.connect():  # the only connection of the pool
            with pytest.raises(PoolTimeout) as no_connection:
                db.engine.connect()
        assert is_overloaded(no_connection.value)
        with writers_blocked(database_url, "evaluators"), db.transaction() as session:
            with pytest.raises(OperationalError) as locked:
                session.add(Evaluator(name="waits", kind="command"))
                session.flush()
        assert is_overloaded(locked.value)
        with db.session() as session, pytest.raises(DBAPIError) as broken:
            session.execute(text("SELECT * FROM no_such_table"))
        assert not is_overloaded(broken.value)
    finally:
        db.dispose()


def test_reads_only_never_takes_the_sqlite_write_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    db = Database(url, PoolLimits(wait_seconds=0.2))
    upgrade(db.engine)
    try:
        with writers_blocked(url, "evaluators"):
            with reads_only(), db.transaction() as session:  # a read-write session
                assert session.scalar(select(func.count()).select_from(Evaluator)) == 0
            with db.transaction() as session, pytest.raises(OperationalError) as locked:
                session.scalar(select(func.count()).select_from(Evaluator))
        assert is_overloaded(locked.value)
    finally:
        db.dispose()
