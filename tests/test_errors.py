"""Which errors mean "the disk is full" (507) wherever the server writes."""

from __future__ import annotations

import errno
import sqlite3

import psycopg.errors
import pytest
from sqlalchemy.exc import OperationalError

from zerospeech_api.errors import InsufficientStorage, out_of_space


def wrapped(driver_error: Exception) -> OperationalError:
    """As SQLAlchemy raises a driver's error."""
    return OperationalError("INSERT ...", {}, driver_error)


def sqlite_full() -> sqlite3.Error:
    """SQLite's own SQLITE_FULL (a database capped at its current size)."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("CREATE TABLE t (x BLOB)")
        connection.execute("PRAGMA max_page_count = 2")
        connection.execute("INSERT INTO t VALUES (randomblob(100000))")
    except sqlite3.Error as error:
        return error
    finally:
        connection.close()
    raise AssertionError("SQLite took the row")


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        wrapped(sqlite_full()),
        wrapped(psycopg.errors.DiskFull("could not extend file")),
    ],
)
def test_a_full_disk_is_a_507(error: Exception) -> None:
    mapped = out_of_space(error)
    assert isinstance(mapped, InsufficientStorage) and mapped.status == 507


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EIO, "Input/output error"),
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
        wrapped(sqlite3.OperationalError("database is locked")),
        RuntimeError("anything else"),
    ],
)
def test_other_errors_are_not(error: Exception) -> None:
    assert out_of_space(error) is None
