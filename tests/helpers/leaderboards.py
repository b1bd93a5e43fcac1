"""Strict readers of the public leaderboard JSON and CSV (the entries they read are built by
tests.helpers.factories)."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_BLANKS = re.compile(r"^[\s\x00-\x1f\x7f-\x9f]*")


def strict_json(text: str) -> Any:
    """JSON as a browser's JSON.parse reads it: NaN and Infinity tokens are errors."""

    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def csv_rows(text: str) -> list[list[str]]:
    """All rows of a CSV text, header first, read as RFC 4180 says."""
    return list(csv.reader(io.StringIO(text, newline="")))


def csv_column(text: str, name: str) -> list[str]:
    """One column of a CSV text, header excluded."""
    header, *rows = csv_rows(text)
    return [row[header.index(name)] for row in rows]


def risky_cells(rows: list[list[str]]) -> list[str]:
    """Cells a spreadsheet could run: a formula character after leading blanks and controls,
    or a leading tab or CR, and not a plain number."""
    risky = []
    for row in rows:
        for cell in row:
            rest = cell[_BLANKS.match(cell).end() :]  # type: ignore[union-attr]
            if (rest.startswith(FORMULA_START) or cell[:1] in ("\t", "\r")) and not _number(cell):
                risky.append(cell)
    return risky


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
