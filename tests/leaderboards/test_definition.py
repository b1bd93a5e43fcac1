"""A leaderboard's page definition: score columns (KEY=LABEL[:FORMAT]), sort key, direction,
through the service (the commands are tested in tests/cli/test_leaderboard_columns.py)."""

from __future__ import annotations

import pytest

from tests.helpers.factories import make_benchmark, make_leaderboard, realistic_entry
from zerospeech_api.errors import BadRequest
from zerospeech_api.leaderboards import service
from zerospeech_api.leaderboards.definition import (
    Column,
    cell,
    default_columns,
    format_number,
    parse_column,
    shown_columns,
    update_leaderboard,
)


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("scores.a.b=Lexical", Column("scores.a.b", "Lexical")),
        ("scores.a=Lexical (test):.2f", Column("scores.a", "Lexical (test)", ".2f")),
        ("scores.a = Error rate : .1% ", Column("scores.a", "Error rate", ".1%")),
        ("scores.a=Time: 10:30", Column("scores.a", "Time: 10:30")),  # not a format: label
        ("extras.epochs=Epochs:,d", Column("extras.epochs", "Epochs", ",d")),
    ],
)
def test_column_texts(text: str, column: Column) -> None:
    assert parse_column(text) == column


@pytest.mark.parametrize(
    "text", ["scores.a", "=Label", "scores..a=x", "a b=x", "scores.a=", "x=" + "y" * 61]
)
def test_bad_column_texts_are_refused(text: str) -> None:
    with pytest.raises(BadRequest, match="KEY=LABEL"):
        parse_column(text)


def test_number_formats() -> None:
    assert format_number(93.0215) == "93.02"
    assert format_number(0.84871) == "0.8487"
    assert format_number(12345.6) == "12346"
    assert format_number(7) == "7"
    assert format_number(0.1234, ".1%") == "12.3%"
    assert format_number(1234.6, ",d") == "1,235"
    assert format_number("8.5", ".2f") == "8.50"  # numbers written as text, as old entries do
    assert format_number(None) == "" and format_number("n/a") == "n/a"
    assert format_number(float("nan")) == "nan"  # never formatted as a number


def test_default_columns_are_the_numeric_scores_with_the_ranking_key_first(db) -> None:
    entries = [realistic_entry(1), {"scores": {"extra": 1.5, "flag": True, "text": "x"}}]
    keys = [c.key for c in default_columns(entries)]
    assert keys[:2] == ["scores.lexical.all.dev", "scores.lexical.all.test"]
    assert "scores.extra" in keys and "scores.flag" not in keys and "scores.text" not in keys
    bench = make_benchmark(db)
    make_leaderboard(db, "board", bench, sort_key="scores.syntactic.test")
    with db.session(read_only=True) as session:
        board = service.get_leaderboard(session=session, label="board")
        shown = shown_columns(board, entries)
    assert shown[0] == Column("scores.syntactic.test", "syntactic.test")
    assert [c.key for c in shown].count("scores.syntactic.test") == 1


def test_defined_columns_are_kept_in_order_and_the_ranking_key_added(db) -> None:
    bench = make_benchmark(db)
    make_leaderboard(db, "board", bench)
    with db.transaction() as session:
        before = service.leaderboard_version(session=session, label="board")
        update_leaderboard(
            session=session,
            label="board",
            columns=[Column("scores.syntactic.test", "Syntax", ".1f")],
        )
    with db.session(read_only=True) as session:
        board = service.get_leaderboard(session=session, label="board")
        shown = shown_columns(board, [realistic_entry(1)])
        after = service.leaderboard_version(session=session, label="board")
    assert shown == [
        Column("scores.lexical.all.test", "lexical.all.test"),
        Column("scores.syntactic.test", "Syntax", ".1f"),
    ]
    assert cell(realistic_entry(1), shown[1]).count(".") == 1  # one decimal
    assert after != before  # cached pages and ETags move on
    with db.transaction() as session, pytest.raises(BadRequest, match="twice"):
        update_leaderboard(
            session=session,
            label="board",
            columns=[Column("scores.a", "A"), Column("scores.a", "B")],
        )
