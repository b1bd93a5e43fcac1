"""The evaluators a benchmark can name: create, list, show (the `evaluators` commands' logic).

A command evaluator runs on a runner: `local` (a subprocess of the worker) or `slurm` (a batch
job, evaluation/slurm_runner.py) with extra `sbatch` options. Everything is checked before the
row is written: the name, the command line, the runner and the sbatch options.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zerospeech_api.db.tables import Benchmark, Evaluator, EvaluatorKind, EvaluatorRunner
from zerospeech_api.errors import BadRequest, Conflict, NotFound
from zerospeech_api.evaluation.slurm import parse_sbatch_args

NAME_OK = "letters, digits, '_', '.', '-' (1 to 64)"
RUNNERS = tuple(str(r) for r in EvaluatorRunner)
SBATCH_ARGS_LOCAL = "--sbatch-args is only for evaluators that run on Slurm (--runner slurm)"


@dataclass(frozen=True)
class EvaluatorSummary:
    """One evaluator and how many benchmarks use it."""

    evaluator: Evaluator
    benchmarks: int


def create_evaluator(
    *,
    session: Session,
    name: str,
    command: str,
    timeout_seconds: int | None = None,
    description: str = "",
    runner: str = EvaluatorRunner.LOCAL,
    sbatch_args: str = "",
) -> Evaluator:
    """Register a command evaluator; BadRequest naming what is wrong, Conflict if taken."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise BadRequest(f"evaluator name: {NAME_OK}")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise BadRequest(f"--command cannot be parsed: {exc}") from None
    if not argv:
        raise BadRequest("--command is empty")
    if runner not in RUNNERS:
        raise BadRequest(f"--runner must be one of {', '.join(RUNNERS)}")
    if sbatch_args.strip() and runner != EvaluatorRunner.SLURM:
        raise BadRequest(SBATCH_ARGS_LOCAL)
    try:
        parse_sbatch_args(sbatch_args)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if session.scalar(select(Evaluator.id).where(Evaluator.name == name)) is not None:
        raise Conflict(f"an evaluator named {name} already exists")
    evaluator = Evaluator(
        name=name,
        kind=EvaluatorKind.COMMAND,
        command=command,
        timeout_seconds=timeout_seconds,
        description=description,
        runner=runner,
        sbatch_args=sbatch_args.strip(),
    )
    session.add(evaluator)
    session.flush()
    return evaluator


def list_evaluators(*, session: Session) -> list[EvaluatorSummary]:
    """Every evaluator by name, with the number of benchmarks that use it."""
    rows = session.execute(
        select(Benchmark.evaluator_id, func.count()).group_by(Benchmark.evaluator_id)
    ).all()
    uses: dict[int | None, int] = dict(rows)
    return [
        EvaluatorSummary(evaluator, uses.get(evaluator.id, 0))
        for evaluator in session.scalars(select(Evaluator).order_by(Evaluator.name))
    ]


def get_evaluator(*, session: Session, name: str) -> Evaluator:
    """The evaluator named `name`, or NotFound."""
    evaluator = session.scalar(select(Evaluator).where(Evaluator.name == name))
    if evaluator is None:
        raise NotFound(f"no evaluator {name}")
    return evaluator


def evaluator_benchmarks(*, session: Session, evaluator: Evaluator) -> list[str]:
    """Ids of the benchmarks evaluated by this evaluator."""
    return list(
        session.scalars(
            select(Benchmark.id)
            .where(Benchmark.evaluator_id == evaluator.id)
            .order_by(Benchmark.id)
        )
    )
