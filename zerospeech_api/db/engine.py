"""Engine and sessions; SQLite gets WAL, a busy timeout, foreign keys and immediate write locks.

Concurrency rule of the server (deps.py applies it): a connection, and SQLite's write lock, is
held only inside one thread-pool hop, never while a request waits for a thread. Waits for a
connection or for the lock are bounded (`PoolLimits.wait_seconds`); running out is
`is_overloaded`, which the app answers with 503 and Retry-After.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import CursorResult, make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import UpdateBase

READ_ONLY_OPTION = "zr_read_only"
# SQLite result codes (low byte of the extended code): the lock wait ran out.
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
# PostgreSQL SQLSTATEs meaning "no room right now": too_many_connections, cannot_connect_now,
# lock_not_available.
_POSTGRES_BUSY = frozenset({"53300", "57P03", "55P03"})

_reads_only: ContextVar[bool] = ContextVar("zr_reads_only", default=False)


@dataclass(frozen=True)
class PoolLimits:
    """Connections per process and how long anything waits for a connection or SQLite's lock.

    The defaults suit commands and the evaluation worker; the server passes its settings.
    """

    size: int = 5
    overflow: int = 10
    wait_seconds: float = 30.0


@contextmanager
def reads_only() -> Iterator[None]:
    """Transactions begun inside (in this thread) start deferred on SQLite: no write lock, even
    in a read-write session. For code that only reads, such as request dependencies."""
    token = _reads_only.set(True)
    try:
        yield
    finally:
        _reads_only.reset(token)


def is_overloaded(exc: BaseException) -> bool:
    """True when `exc` says the database is busy, not broken: no pooled connection came in
    time, SQLite's lock wait ran out, or PostgreSQL has no connection slot free."""
    if isinstance(exc, PoolTimeout):
        return True
    original = getattr(exc, "orig", None)
    code = getattr(original, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return True
    return getattr(original, "sqlstate", None) in _POSTGRES_BUSY


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event own transaction start (pysqlite's own BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred transaction that later writes cannot wait for the lock: SQLite answers
        # "database is locked" at once when its snapshot is stale. Writers take the lock up front
        # (and so queue on busy_timeout); read-only sessions, and code under `reads_only()`,
        # stay deferred and never block.
        if connection.get_execution_options().get(READ_ONLY_OPTION) or _reads_only.get():
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, limits: PoolLimits | None = None) -> Engine:
    """Create the engine for a URL; creates the SQLite file's folder if needed."""
    limits = limits or PoolLimits()
    pool = {
        "pool_size": limits.size,
        "max_overflow": limits.overflow,
        "pool_timeout": limits.wait_seconds,
    }
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ":memory:"
        in_memory = database == ":memory:"
        if not in_memory:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": limits.wait_seconds}, **({} if in_memory else pool)
        )
        _configure_sqlite(engine, round(limits.wait_seconds * 1000))
        return engine
    # A row or table lock is waited for as long as a connection or SQLite's lock, then the
    # statement fails with lock_not_available (an overload, answered 503), never indefinitely.
    options = (
        f"{parsed.query.get('options', '')} -c lock_timeout={round(limits.wait_seconds * 1000)}"
    )
    return create_engine(url, pool_pre_ping=True, connect_args={"options": options.strip()}, **pool)


def rows_changed(session: Session, statement: UpdateBase) -> int:
    """Run an UPDATE or DELETE in the session; returns how many rows it matched."""
    result = session.execute(statement)
    # Session.execute is typed as returning Result; a DML statement gives a CursorResult, the
    # one that knows its rowcount.
    if not isinstance(result, CursorResult):
        raise TypeError(f"{type(statement).__name__} gave {type(result).__name__}, no rowcount")
    return result.rowcount


class Database:
    """One engine and its two session factories: read-write and read-only."""

    def __init__(self, url: str, limits: PoolLimits | None = None) -> None:
        self.url = url
        self.engine = make_engine(url, limits)
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._read = sessionmaker(
            self.engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False
        )

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def session(self, *, read_only: bool = False) -> Session:
        """A new session; read-only ones never take SQLite's write lock."""
        return (self._read if read_only else self._write)()

    @contextmanager
    def transaction(self, *, read_only: bool = False) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self.session(read_only=read_only) as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
