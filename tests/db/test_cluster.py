"""What hosts coordinate through the database: named locks, its clock, migrations run once and
never by an older build, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, text

from tests.helpers.factories import make_benchmark, make_submission, make_user, status_of
from tests.helpers.processes import at_once, wait_for
from zerospeech_api.db import cluster
from zerospeech_api.db.cluster import db_now, named_lock
from zerospeech_api.db.engine import Database
from zerospeech_api.db.migrate import SchemaTooNew, current_revision, head_revision, upgrade
from zerospeech_api.db.tables import utcnow
from zerospeech_api.evaluation import jobs
from zerospeech_api.settings import Settings

POSTGRES_ONLY = pytest.mark.parametrize(
    "backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def test_a_named_lock_has_one_holder_at_a_time(db: Database, tmp_path: Path) -> None:
    other = Database(db.url)  # another process's pool: it must not matter whose connection
    try:
        with named_lock(db.engine, "a", lock_file=tmp_path / "a.lock", wait=False) as first:
            assert first
            with named_lock(other.engine, "a", lock_file=tmp_path / "a.lock", wait=False) as held:
                assert not held
            with named_lock(other.engine, "b", lock_file=tmp_path / "b.lock", wait=False) as held:
                assert held  # another name is another lock
        with named_lock(other.engine, "a", lock_file=tmp_path / "a.lock", wait=False) as held:
            assert held
    finally:
        other.dispose()


def test_a_waiting_lock_gets_it_when_the_holder_lets_go(db: Database, tmp_path: Path) -> None:
    got: list[str] = []

    def waiter() -> None:
        with named_lock(db.engine, "w", lock_file=tmp_path / "w.lock") as held:
            got.append(f"held={held}")

    with named_lock(db.engine, "w", lock_file=tmp_path / "w.lock"):
        thread = threading.Thread(target=waiter)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and got == []
    thread.join(10)
    assert got == ["held=True"]


HOLD = """
import sys
from zerospeech_api.db.cluster import named_lock
from zerospeech_api.db.engine import Database
db = Database(sys.argv[1])
with named_lock(db.engine, "dies", lock_file=__import__("pathlib").Path(sys.argv[2])) as held:
    print(held, flush=True)
    sys.stdin.read()
"""


def test_the_lock_of_a_killed_process_is_free_again(db: Database, tmp_path: Path) -> None:
    lock_file = tmp_path / "dies.lock"

    def free() -> bool:
        with named_lock(db.engine, "dies", lock_file=lock_file, wait=False) as held:
            return held

    argv = [sys.executable, "-c", HOLD, db.url, str(lock_file)]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
            assert not free()
            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            wait_for(free, timeout=10, what="the dead holder's lock to be dropped")
        finally:
            holder.kill()


def test_db_now_is_the_database_clock(db: Database, backend: str) -> None:
    with db.session(read_only=True) as session:
        now = db_now(session)
        if backend == "postgres":
            server = session.execute(text("SELECT now()")).scalar_one()
            assert now == server  # the transaction's time, not this host's
    assert now.tzinfo is not None
    assert abs((now - utcnow()).total_seconds()) < 5


@POSTGRES_ONLY
def test_db_now_asks_the_database_once_per_transaction(db: Database) -> None:
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.session() as session:
            first = db_now(session)
            assert db_now(session) == first
            assert statements.count("SELECT now()") == 1
            session.commit()
            session.execute(text("SELECT pg_sleep(0.01)"))
            second = db_now(session)  # a new transaction: its own start time
            assert second > first
            assert statements.count("SELECT now()") == 2
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


@POSTGRES_ONLY
def test_a_worker_whose_clock_runs_ahead_steals_no_lease(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = make_submission(db, settings, make_user(db, settings), benchmark_id=make_benchmark(db))
    with db.transaction() as session:
        jobs.enqueue(session=session, submission_id=sid, max_attempts=3, reason="test")
    claimed = jobs.claim(db=db, owner="healthy", lease_seconds=30)
    assert claimed is not None
    # Another host's worker whose clock is 40 s ahead: past the healthy worker's lease.
    ahead = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(seconds=40)  # noqa: E731
    monkeypatch.setattr(jobs, "utcnow", ahead, raising=False)
    monkeypatch.setattr(cluster, "utcnow", ahead)
    assert not jobs.pending(db=db).expired
    assert jobs.requeue_expired(db=db) == []
    assert jobs.renew(db=db, job_id=claimed.job_id, owner="healthy", lease_seconds=30)
    assert status_of(db, sid) == "evaluating"


def test_concurrent_migrations_all_succeed_once(database_url: str) -> None:
    def migrate() -> None:
        db = Database(database_url)
        try:
            upgrade(db.engine)
        finally:
            db.dispose()

    at_once(migrate, 4)  # raises the first error of any of them
    db = Database(database_url)
    try:
        assert current_revision(db.engine) == head_revision()
        with db.session(read_only=True) as session:
            versions = session.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [row[0] for row in versions] == [head_revision()]
    finally:
        db.dispose()


def test_a_schema_newer_than_the_build_is_refused(database_url: str) -> None:
    db = Database(database_url)
    try:
        upgrade(db.engine)
        with db.transaction() as session:
            session.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(SchemaTooNew, match="revision 9999, newer than this build"):
            upgrade(db.engine)
        with db.session(read_only=True) as session:  # and nothing was touched
            assert session.execute(text("SELECT version_num FROM alembic_version")).all() == [
                ("9999",)
            ]
    finally:
        db.dispose()
