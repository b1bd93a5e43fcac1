"""slurm.py without a cluster: the batch script (run by a real shell), the time limit, the
checks of an evaluator's extra sbatch options, and the evaluator registry's slurm runner."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import EvaluatorRunner
from zerospeech_api.errors import BadRequest
from zerospeech_api.evaluation import registry
from zerospeech_api.evaluation.slurm import (
    batch_script,
    parse_sbatch_args,
    read_exit_code,
    time_limit_minutes,
)


@pytest.mark.parametrize("code", [0, 4, 65])
def test_the_batch_script_records_the_evaluators_exit_code(tmp_path: Path, code: int) -> None:
    workdir = tmp_path / "unpacked dir"
    workdir.mkdir()
    script = tmp_path / "slurm.sh"
    argv = ["sh", "-c", 'echo "$SUBMISSION_ID in $(pwd)"; exit "$1"', "sh", str(code)]
    script.write_text(
        batch_script(argv=argv, workdir=workdir, run_dir=tmp_path, env={"SUBMISSION_ID": "s 1"})
    )
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, env={})
    assert done.returncode == code
    assert done.stdout == f"s 1 in {workdir}\n"
    assert read_exit_code(tmp_path) == code
    assert not (tmp_path / "exit_code.partial").exists()


def test_no_exit_code_until_the_script_wrote_one(tmp_path: Path) -> None:
    assert read_exit_code(tmp_path) is None
    (tmp_path / "exit_code").write_text("")  # cut short while writing: not a code
    assert read_exit_code(tmp_path) is None


def test_the_time_limit_is_the_timeout_in_whole_minutes() -> None:
    assert [time_limit_minutes(s) for s in (1, 60, 61, 3600, 0.5)] == [1, 1, 2, 60, 1]


def test_extra_sbatch_options_may_not_change_what_the_worker_sets() -> None:
    assert parse_sbatch_args("--partition=gpu --gres=gpu:1 --mem 32G -A lab") == [
        "--partition=gpu", "--gres=gpu:1", "--mem", "32G", "-A", "lab",
    ]  # fmt: skip
    assert parse_sbatch_args("") == []
    for bad in ("--time=10", "-t 5", "-Jname", "--output=/tmp/x", "--export=ALL", "--wrap=x"):
        with pytest.raises(ValueError, match="may not set"):
            parse_sbatch_args(bad)
    with pytest.raises(ValueError, match="cannot be parsed"):
        parse_sbatch_args("--comment='open")


def test_the_registry_checks_the_runner_and_its_options(db: Database) -> None:
    with db.transaction() as session:
        made = registry.create_evaluator(
            session=session,
            name="abx-gpu",
            command="/opt/abx/run {input} {output}",
            runner=EvaluatorRunner.SLURM,
            sbatch_args=" --partition=gpu --gres=gpu:1 ",
        )
        assert (made.runner, made.sbatch_args) == ("slurm", "--partition=gpu --gres=gpu:1")
        local = registry.create_evaluator(session=session, name="abx", command="/opt/abx/run")
        assert (local.runner, local.sbatch_args) == ("local", "")
    refused = {
        "unknown runner": {"runner": "pbs"},
        "sbatch args, local runner": {"sbatch_args": "--mem=1G"},
        "reserved option": {"runner": "slurm", "sbatch_args": "--time=5"},
    }
    for options in refused.values():
        with db.transaction() as session, pytest.raises(BadRequest):
            registry.create_evaluator(session=session, name="x", command="run", **options)
