"""`evaluators` admin commands: create, list, show (logic in evaluation/registry.py)."""

from __future__ import annotations

import click

from zerospeech_api.cli.context import CliContext, pass_ctx
from zerospeech_api.cli.output import domain_errors, fields, table
from zerospeech_api.db.tables import EvaluatorRunner
from zerospeech_api.evaluation import registry
from zerospeech_api.evaluation.slurm import time_limit_minutes


@click.group(name="evaluators")
def group() -> None:
    """Manage evaluators (how a benchmark's submissions are checked)."""


@group.command()
@click.argument("name")
@click.option(
    "--command",
    "command",
    required=True,
    help="Command line run on each submission. `{input}` is replaced by the unpacked folder and "
    "`{output}` by the entry file to write; without placeholders both are appended.",
)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=None,
    help="Seconds (default: ZR_EVALUATOR_TIMEOUT_SECONDS); on Slurm the job's time limit, "
    "rounded up to whole minutes.",
)
@click.option("--description", default="", help="What the evaluator does.")
@click.option(
    "--runner",
    type=click.Choice(registry.RUNNERS),
    default=EvaluatorRunner.LOCAL.value,
    show_default=True,
    help="`local`: a subprocess of the worker; `slurm`: a batch job submitted with sbatch.",
)
@click.option(
    "--sbatch-args",
    default="",
    help="Extra sbatch options of the Slurm jobs, e.g. '--partition=gpu --gres=gpu:1 --mem=32G' "
    "(--runner slurm only).",
)
@pass_ctx
def create(
    ctx: CliContext,
    name: str,
    command: str,
    timeout: int | None,
    description: str,
    runner: str,
    sbatch_args: str,
) -> None:
    """Register a command evaluator."""
    with domain_errors(), ctx.db.transaction() as session:
        registry.create_evaluator(
            session=session,
            name=name,
            command=command,
            timeout_seconds=timeout,
            description=description,
            runner=runner,
            sbatch_args=sbatch_args,
        )
    click.echo(f"created evaluator {name} ({runner})")


@group.command(name="list")
@pass_ctx
def list_(ctx: CliContext) -> None:
    """Every evaluator and how many benchmarks use it."""
    with ctx.db.session(read_only=True) as session:
        rows = [
            (
                row.evaluator.name,
                row.evaluator.kind,
                row.evaluator.timeout_seconds or "",
                row.benchmarks,
                row.evaluator.runner if row.evaluator.command else "",
                row.evaluator.command or "",
            )
            for row in registry.list_evaluators(session=session)
        ]
    table(["name", "kind", "timeout", "benchmarks", "runner", "command"], rows)


@group.command()
@click.argument("name")
@pass_ctx
def show(ctx: CliContext, name: str) -> None:
    """One evaluator in detail."""
    with domain_errors(), ctx.db.session(read_only=True) as session:
        evaluator = registry.get_evaluator(session=session, name=name)
        benchmarks = registry.evaluator_benchmarks(session=session, evaluator=evaluator)
        timeout = evaluator.timeout_seconds or ctx.settings.evaluator_timeout_seconds
        timeout_text = (
            f"{evaluator.timeout_seconds} s"
            if evaluator.timeout_seconds
            else f"default ({timeout} s)"
        )
        pairs: list[tuple[str, object]] = [
            ("name", evaluator.name),
            ("kind", evaluator.kind),
            ("command", evaluator.command or "(built-in)"),
            ("timeout", timeout_text),
        ]
        if evaluator.command:
            pairs.append(("runner", evaluator.runner))
        if evaluator.runner == EvaluatorRunner.SLURM:
            pairs += [
                ("sbatch args", evaluator.sbatch_args or "(none)"),
                ("time limit", f"{time_limit_minutes(timeout)} min (Slurm counts minutes)"),
            ]
        pairs += [
            ("description", evaluator.description),
            ("benchmarks", ", ".join(benchmarks) or "(none)"),
            ("created", evaluator.created_at.isoformat()),
        ]
        fields(pairs)
