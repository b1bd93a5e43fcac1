"""Rules every piece of client input obeys: text without control characters, datetimes in a sane
range (the case-insensitive key for names is `db.keys.name_key`, stored in the tables).

Control characters travel: into mails, into the operator's terminal, into PostgreSQL (which
refuses NUL outright). So one set of characters is refused in every text field, path and query:
C0 and C1 controls (NUL, ESC, newlines...), lone surrogates (cannot be encoded), the Unicode
line/paragraph separators, and the bidi embedding/override/isolate controls (text that displays
in another order than it reads). Multi-line fields (a model's description) may hold newlines and
tabs, nothing else from the set.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import AfterValidator

_UNSAFE = (
    "\x00-\x1f\x7f-\x9f"  # C0 and C1 controls, DEL
    "\ud800-\udfff"  # lone surrogates
    "\u2028\u2029"  # line and paragraph separators
    "\u202a-\u202e\u2066-\u2069"  # bidi embeddings, overrides and isolates
)
UNSAFE_CHARACTER = re.compile(f"[{_UNSAFE}]")
MULTILINE_ALLOWED = "\t\n\r"
CONTROL_CHARACTER = "must not contain control characters"

# Far outside this range a datetime overflows on conversion to UTC or in the database.
MIN_DATETIME = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
MAX_DATETIME = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
DATE_OUT_OF_RANGE = (
    f"must be between {MIN_DATETIME.year} and {MAX_DATETIME.year - 1} (a real date, in UTC)"
)


def first_unsafe(value: str, *, multiline: bool = False) -> str | None:
    """The first refused character of `value` (newlines and tabs allowed if `multiline`)."""
    for match in UNSAFE_CHARACTER.finditer(value):
        if not (multiline and match.group() in MULTILINE_ALLOWED):
            return match.group()
    return None


def describe(character: str) -> str:
    """`U+001B` for a character (never the character itself, which may be unprintable)."""
    return f"U+{ord(character):04X}"


def _refuse_unsafe(value: str, *, multiline: bool) -> str:
    found = first_unsafe(value, multiline=multiline)
    if found is not None:
        raise ValueError(f"{CONTROL_CHARACTER} (found {describe(found)})")
    return value


def one_line(value: str) -> str:
    """`value` unchanged, or `ValueError` if it holds any refused character."""
    return _refuse_unsafe(value, multiline=False)


def multi_line(value: str) -> str:
    """`value` unchanged, or `ValueError` if it holds a refused character other than newlines
    and tabs."""
    return _refuse_unsafe(value, multiline=True)


# Put the markers after a field's constraints (`Annotated[str, StringConstraints(...), ONE_LINE]`):
# wrapping the aliases in constraints would check lengths before stripping.
ONE_LINE = AfterValidator(one_line)
MULTI_LINE = AfterValidator(multi_line)
OneLine = Annotated[str, ONE_LINE]
MultiLine = Annotated[str, MULTI_LINE]


def bounded_datetime(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime (naive values are read as UTC) within the sane range, else
    `ValueError`."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    # Compare before converting: astimezone itself overflows near year 1 and 9999.
    if not MIN_DATETIME <= value <= MAX_DATETIME:
        raise ValueError(DATE_OUT_OF_RANGE)
    return value.astimezone(dt.UTC)


SaneDatetime = Annotated[dt.datetime, AfterValidator(bounded_datetime)]
