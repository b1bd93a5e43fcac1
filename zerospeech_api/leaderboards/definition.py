"""What a leaderboard shows: its score columns (key, label, number format), sort key, direction.

A column is given as `KEY=LABEL` or `KEY=LABEL:FORMAT` (`scores.lexical.all.test=Lexical:.2f`);
FORMAT is a small number format (`.2f`, `.1%`, `.3e`, `.4g`, `,d`...). Without columns the page
shows every numeric score of the entries. The ranking key is always shown, first if not listed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from zerospeech_api.db.tables import Leaderboard, utcnow
from zerospeech_api.errors import BadRequest
from zerospeech_api.leaderboards.service import (
    BAD_SORT_KEY,
    SORT_KEY_RE,
    dotted_get,
    get_leaderboard,
)

BAD_COLUMN = (
    "column {text!r}: write KEY=LABEL or KEY=LABEL:FORMAT, KEY a dotted path such as "
    "scores.lexical.all.test, FORMAT such as .2f, .1%, .3e or ,d"
)
DUPLICATE_COLUMN = "column {key} is listed twice"
MAX_COLUMNS = 30
MAX_LABEL_LENGTH = 60
# Shown when no columns are defined: numeric leaves under `scores`, at most this many.
DEFAULT_MAX_COLUMNS = 16
_FORMAT = re.compile(r",?(\.\d{1,2})?[efg%]|,?d")
UNSET: Any = object()  # "leave unchanged" in update_leaderboard


@dataclass(frozen=True)
class Column:
    """One score column: dotted key into the entry, header label, number format ('' = auto)."""

    key: str
    label: str
    format: str = ""


def parse_column(text: str) -> Column:
    """`KEY=LABEL[:FORMAT]` as a Column, or `BadRequest`."""
    key, sep, rest = text.partition("=")
    key, label, fmt = key.strip(), rest.strip(), ""
    head, colon, tail = label.rpartition(":")
    if colon and _FORMAT.fullmatch(tail.strip()):
        label, fmt = head.strip(), tail.strip()
    if not sep or not SORT_KEY_RE.match(key) or not label or len(label) > MAX_LABEL_LENGTH:
        raise BadRequest(BAD_COLUMN.format(text=text[:200]))
    return Column(key=key, label=label, format=fmt)


def check_columns(columns: Sequence[Column]) -> list[Column]:
    """The columns, refused if too many or a key repeats."""
    if len(columns) > MAX_COLUMNS:
        raise BadRequest(f"at most {MAX_COLUMNS} columns")
    seen: set[str] = set()
    for column in columns:
        if column.key in seen:
            raise BadRequest(DUPLICATE_COLUMN.format(key=column.key))
        seen.add(column.key)
    return list(columns)


def defined_columns(leaderboard: Leaderboard) -> list[Column] | None:
    """The stored column definitions, or None when the leaderboard has none."""
    if leaderboard.columns is None:
        return None
    return [Column(**c) for c in leaderboard.columns]


def update_leaderboard(
    *,
    session: Session,
    label: str,
    columns: Sequence[Column] | None = UNSET,
    sort_key: str = UNSET,
    descending: bool = UNSET,
) -> Leaderboard:
    """Change the given parts of a definition (columns None: back to the default columns)."""
    leaderboard = get_leaderboard(session=session, label=label, public=False)
    if columns is not UNSET:
        leaderboard.columns = (
            None if columns is None else [asdict(c) for c in check_columns(columns)]
        )
    if sort_key is not UNSET:
        if not SORT_KEY_RE.match(sort_key):
            raise BadRequest(BAD_SORT_KEY)
        leaderboard.sort_key = sort_key
    if descending is not UNSET:
        leaderboard.descending = descending
    # The compiled leaderboard's version includes updated_at: caches and ETags move on.
    leaderboard.updated_at = utcnow()
    session.flush()
    return leaderboard


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def numeric_keys(data: Any, prefix: str) -> Iterable[str]:
    """Dotted keys of the numeric leaves of nested objects, in document order."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from numeric_keys(value, f"{prefix}.{key}" if prefix else str(key))
    elif is_number(data) and prefix:
        yield prefix


def default_columns(entries: Iterable[dict[str, Any]]) -> list[Column]:
    """Every numeric score under `scores` (first-seen order), labelled by its path."""
    keys: dict[str, None] = {}
    for entry in entries:
        for key in numeric_keys(entry.get("scores"), "scores"):
            keys.setdefault(key, None)
        if len(keys) >= DEFAULT_MAX_COLUMNS:
            break
    return [
        Column(key=k, label=k.removeprefix("scores.")) for k in list(keys)[:DEFAULT_MAX_COLUMNS]
    ]


def shown_columns(leaderboard: Leaderboard, entries: Sequence[dict[str, Any]]) -> list[Column]:
    """The columns a page shows: as defined (the ranking key added first if missing), else the
    ranking key and every other numeric score."""
    columns = defined_columns(leaderboard)
    if columns is None:  # the ranking score first, then the others in document order
        columns = [c for c in default_columns(entries) if c.key != leaderboard.sort_key]
    if all(c.key != leaderboard.sort_key for c in columns):
        label = leaderboard.sort_key.removeprefix("scores.")
        columns = [Column(key=leaderboard.sort_key, label=label), *columns]
    return columns


def format_number(value: Any, fmt: str = "") -> str:
    """A score as text: with the column's format, else 4 significant digits in fixed point."""
    if isinstance(value, str):
        text = value
        try:
            value = float(text)
        except ValueError:
            return text
    if not is_number(value):
        return "" if value is None else str(value)
    if fmt:
        # An integer format shows a float rounded; every other format takes the number as is.
        return format(round(value) if fmt.endswith("d") else value, fmt)
    if isinstance(value, int) or value == 0:
        return str(value)
    decimals = min(4, max(0, 3 - math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


def cell(entry: dict[str, Any], column: Column) -> str:
    """The formatted value of a column in an entry ('' when missing)."""
    return format_number(dotted_get(entry, column.key), column.format)
