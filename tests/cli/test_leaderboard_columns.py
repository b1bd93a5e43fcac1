"""`leaderboards create --column` and `leaderboards update`: the web page's score columns."""

from __future__ import annotations

from tests.helpers.cli import invoke_cli
from tests.helpers.factories import make_benchmark
from zerospeech_api.leaderboards import service


def test_cli_create_with_columns_and_update(run_cli, db) -> None:
    bench = make_benchmark(db)
    created = run_cli(
        "leaderboards", "create", "board", "--benchmark", bench,
        "--sort-key", "scores.lexical.all.test",
        "--column", "scores.lexical.all.test=Lexical:.2f", "--column", "extras.epochs=Epochs",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    with db.session(read_only=True) as session:
        board = service.get_leaderboard(session=session, label="board")
        assert board.columns == [
            {"key": "scores.lexical.all.test", "label": "Lexical", "format": ".2f"},
            {"key": "extras.epochs", "label": "Epochs", "format": ""},
        ]
    updated = run_cli(
        "leaderboards", "update", "board", "--ascending", "--sort-key", "scores.syntactic.test",
        "--default-columns",
    )  # fmt: skip
    assert updated.exit_code == 0, updated.output
    with db.session(read_only=True) as session:
        board = service.get_leaderboard(session=session, label="board")
        assert (board.columns, board.descending, board.sort_key) == (
            None, False, "scores.syntactic.test"
        )  # fmt: skip
    nothing = run_cli("leaderboards", "update", "board")
    assert nothing.exit_code == 1 and "nothing to change" in nothing.output
    bad = run_cli("leaderboards", "update", "board", "--column", "oops")
    assert bad.exit_code == 1 and "KEY=LABEL" in bad.output
    unknown = run_cli("leaderboards", "update", "nope", "--ascending")
    assert unknown.exit_code == 1 and "no leaderboard nope" in unknown.output
    assert "update" in invoke_cli(None, "leaderboards", "--help").output
