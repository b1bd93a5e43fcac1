"""Which errors mean "the disk is full" (507) wherever the server writes."""

from __future__ import annotations

import errno
import sqlite3

import psycopg.errors
import pydantic
import pytest
from sqlalchemy.exc import OperationalError

from zerospeech_api.errors import InsufficientStorage, out_of_space, validation_lines


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


def pydantic_errors() -> list[dict[str, object]]:
    """The errors of a real pydantic validation: a field, a nested field, a model rule."""

    class Inner(pydantic.BaseModel):
        size: int

    class Form(pydantic.BaseModel):
        first_name: str = pydantic.Field(max_length=3)
        inner: Inner

        @pydantic.model_validator(mode="after")
        def never(self) -> Form:
            raise ValueError("the form as a whole is wrong")

    with pytest.raises(pydantic.ValidationError) as caught:
        Form(first_name="Adalbert", inner={"size": "big"})  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError) as whole:
        Form(first_name="Ada", inner={"size": 1})  # type: ignore[arg-type]
    return [*caught.value.errors(), *whole.value.errors()]


def test_validation_lines_name_the_field_never_the_value() -> None:
    lines = validation_lines(pydantic_errors())
    assert lines[0].startswith("first_name: String should have at most 3 characters")
    assert lines[1].startswith("inner.size: Input should be a valid integer")
    assert lines[2] == "Value error, the form as a whole is wrong"
    assert not any("Adalbert" in line or "big" in line for line in lines)
    assert validation_lines(pydantic_errors(), words=True)[0].startswith("first name: ")
    # FastAPI's `body` prefix goes; a missing body still says what is missing.
    body = [{"loc": ("body", "email"), "msg": "Field required"}]
    assert validation_lines(body) == ["email: Field required"]
    assert validation_lines([{"loc": ("body",), "msg": "Field required"}]) == [
        "body: Field required"
    ]
