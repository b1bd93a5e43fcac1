"""`evaluators create|list|show` against the configured database."""

from __future__ import annotations

import pytest

from tests.helpers.factories import make_benchmark


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


def test_a_slurm_evaluator_shows_its_runner_options_and_time_limit(cli) -> None:
    created = cli(
        "evaluators", "create", "abx-gpu", "--runner", "slurm", "--command", "/opt/abx/run",
        "--timeout", "90", "--sbatch-args", "--partition=gpu --gres=gpu:1 --mem=32G",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert (
        cli("evaluators", "create", "abx", "--command", "/opt/abx/run", "--timeout", "9").exit_code
        == 0
    )
    lines = cli("evaluators", "list").output.splitlines()
    assert lines[0].split()[4] == "RUNNER"
    assert next(line for line in lines if line.startswith("abx-gpu ")).split()[4] == "slurm"
    assert next(line for line in lines if line.startswith("abx ")).split()[4] == "local"
    shown = cli("evaluators", "show", "abx-gpu").output
    assert "slurm" in shown and "--partition=gpu --gres=gpu:1 --mem=32G" in shown
    assert "2 min" in shown  # 90 s: Slurm counts whole minutes
    assert "sbatch args" not in cli("evaluators", "show", "abx").output
    reserved = cli(
        "evaluators", "create", "y", "--runner", "slurm", "--command", "a", "--sbatch-args", "-t 5"
    )
    assert reserved.exit_code == 1 and "may not set --time" in reserved.output
    local = cli("evaluators", "create", "z", "--command", "a", "--sbatch-args", "--mem=1G")
    assert local.exit_code == 1 and "--runner slurm" in local.output
