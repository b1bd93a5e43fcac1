"""Leaderboard test helpers: entries stored as the database holds them (bypassing the entry
rules, like data from before them), and strict readers of the public JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import LeaderboardEntry
from zerospeech_api.leaderboards import service

FORMULA_START = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_BLANKS = re.compile(r"^[\s\x00-\x1f\x7f-\x9f]*")


def nested(levels: int) -> Any:
    """Lists `levels` deep."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def stored_bad_entries(db: Database) -> list[dict[str, Any]]:
    """Entries breaking the entry rules that this backend can hold (PostgreSQL's json type
    refuses NaN and Infinity; SQLite keeps them)."""
    bad: list[dict[str, Any]] = [
        {"submission_id": "huge", "scores": {"a": {"b": 9**400}}},
        {"submission_id": "deep", "scores": {"a": {"b": 1.0}}, "details": nested(60)},
        {"submission_id": "cr", "scores": {"a": {"b": None}}, "description": "\r=1+2"},
        {"submission_id": "surrogate", "scores": {"a": {"b": "x"}}, "description": "a\ud800b"},
        {"submission_id": "nul", "scores": {"a": {"b": [1]}}, "description": "\x00@SUM(A1)"},
    ]
    if db.url.startswith("sqlite"):
        bad += [
            {"submission_id": "nan", "scores": {"a": {"b": float("nan")}}},
            {"submission_id": "inf", "scores": {"a": {"b": float("-inf")}}, "x": [float("inf")]},
        ]
    return bad


def store_entries(db: Database, label: str, entries: list[dict[str, Any]]) -> None:
    """Insert entries as they are (no check), as imported ones (no submission)."""
    with db.transaction() as session:
        leaderboard = service.get_leaderboard(session=session, label=label, public=False)
        for data in entries:
            session.add(LeaderboardEntry(leaderboard_id=leaderboard.id, data=data))


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
