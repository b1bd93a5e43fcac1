"""`evaluators create|list|show` against the configured database."""

from __future__ import annotations

import pytest

from tests.helpers.evaluation import make_benchmark


@pytest.fixture
def cli(run_cli):
    return run_cli


def test_create_list_show(cli, db) -> None:
    created = cli(
        "evaluators",
        "create",
        "abx",
        "--command",
        "python3 -m abx {input} --out {output}",
        "--timeout",
        "600",
        "--description",
        "ABX error rates",
    )
    assert created.exit_code == 0, created.output
    make_benchmark(db, "abxLS", evaluator="abx")
    listed = cli("evaluators", "list")
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].split()[:4] == ["NAME", "KIND", "TIMEOUT", "BENCHMARKS"]
    assert any(line.startswith("abx ") and "command" in line and "600" in line for line in lines)
    assert any(line.startswith("scores ") for line in lines)
    shown = cli("evaluators", "show", "abx")
    assert "python3 -m abx {input} --out {output}" in shown.output
    assert "abxLS" in shown.output and "600 s" in shown.output


def test_bad_input_exits_non_zero_with_a_message(cli) -> None:
    assert cli("evaluators", "create", "x", "--command", "a").exit_code == 0
    again = cli("evaluators", "create", "x", "--command", "a")
    assert again.exit_code == 1 and "already exists" in again.output
    bad_quote = cli("evaluators", "create", "y", "--command", "run 'unterminated")
    assert bad_quote.exit_code == 1 and "cannot be parsed" in bad_quote.output
    assert cli("evaluators", "create", "z", "--command", "  ").exit_code == 1
    assert cli("evaluators", "create", "bad name", "--command", "a").exit_code == 1
    missing = cli("evaluators", "show", "nope")
    assert missing.exit_code == 1 and "no evaluator nope" in missing.output
