"""What the processes of several hosts coordinate through the database: its clock and named locks.

Hosts sharing one PostgreSQL do not share a kernel, so neither their clocks nor file locks on a
shared folder can be trusted between them (clocks drift; `flock` is not coherent on every cluster
filesystem). So:

- `db_now` is the time every lease, heartbeat and age is written and compared with: PostgreSQL's
  `now()` (the transaction's start), and on SQLite, which only one host can use, the local clock.
- `named_lock` is "the lock called X" for every process of every host: a PostgreSQL advisory
  lock (held by a connection of its own, dropped by the server if that connection or its process
  dies), and on SQLite an `flock` on a file (dropped by the kernel if the process dies).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from zerospeech_api.db.tables import utcnow

# session.info key of (transaction, its now()): now() does not change within a transaction.
_NOW_KEY = "zerospeech_api.db_now"


def is_postgres(bind: Session | Connection | Engine) -> bool:
    """True when `bind` talks to PostgreSQL (else SQLite)."""
    if isinstance(bind, Session):
        return bind.get_bind().dialect.name == "postgresql"
    return bind.dialect.name == "postgresql"


def db_now(session: Session) -> dt.datetime:
    """The database's current time (aware UTC), the one clock all hosts agree on.

    On PostgreSQL it is the start of the session's transaction (stable within it, so a claim's
    start and lease end are consistent), read once per transaction: a status change and its log
    line cost one query, not two. On SQLite the local clock, without a query."""
    if not is_postgres(session):
        return utcnow()
    transaction = session.get_transaction()
    cached = session.info.get(_NOW_KEY)
    if cached is not None and transaction is not None and cached[0] is transaction:
        cached_now: dt.datetime = cached[1]
        return cached_now
    value = session.execute(text("SELECT now()")).scalar_one()
    if not isinstance(value, dt.datetime):
        raise TypeError(f"now() gave {type(value).__name__}")
    now = value.astimezone(dt.UTC)
    session.info[_NOW_KEY] = (session.get_transaction(), now)
    return now


def lock_key(name: str) -> int:
    """The 64-bit advisory lock key of a lock name (stable across processes and versions)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def named_lock(
    engine: Engine, name: str, *, lock_file: Path | None, wait: bool = True
) -> Iterator[bool]:
    """Hold the lock called `name` among all processes of all hosts; yields whether it is held
    (always True with `wait`, which waits as long as it takes).

    PostgreSQL: a session advisory lock on a connection opened for the purpose, closed at the
    end (the server drops the lock with the connection, also when the process dies). SQLite:
    an `flock` on `lock_file`, whose folder must exist (when it does not, the lock is not
    held: there is nothing to lock); None means no other process can reach the database (in
    memory)."""
    if is_postgres(engine):
        with _advisory_lock(engine, lock_key(name), wait=wait) as held:
            yield held
    elif lock_file is None:
        yield True
    else:
        with _file_lock(lock_file, wait=wait) as held:
            yield held


@contextlib.contextmanager
def _advisory_lock(engine: Engine, key: int, *, wait: bool) -> Iterator[bool]:
    # A connection of its own, taken out of the pool: closing it is the release (the server
    # drops a session's locks when it ends), so a lock can never stay behind in a pooled
    # connection, and holding one never takes a slot that request work could use.
    connection = engine.raw_connection()
    connection.detach()
    try:
        cursor = connection.cursor()
        if wait:
            # The engine's lock_timeout bounds request waits; this one waits for the holder.
            cursor.execute("SET lock_timeout = 0")
            cursor.execute("SELECT pg_advisory_lock(%s)", (key,))
            held = True
        else:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            row = cursor.fetchone()
            held = bool(row and row[0])
        # A session lock outlives the transaction: end it, so the connection does not sit
        # "idle in transaction" while the lock is held.
        connection.commit()
        yield held
        if held:
            # At once: a closed connection's locks go only when the server notices it closed.
            cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
            connection.commit()
    finally:
        connection.close()


@contextlib.contextmanager
def _file_lock(path: Path, *, wait: bool) -> Iterator[bool]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:  # no folder: nothing was ever there to lock
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
