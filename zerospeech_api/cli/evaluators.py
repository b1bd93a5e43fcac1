"""`evaluators` admin commands: create, list, show."""

from __future__ import annotations

import re
import shlex

import click
from sqlalchemy import func, select

from zerospeech_api.cli.context import CliContext, pass_ctx
from zerospeech_api.cli.output import fail, fields, table
from zerospeech_api.db.tables import Benchmark, Evaluator, EvaluatorKind

NAME_OK = "letters, digits, '_', '.', '-' (1 to 64)"


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
    help="Seconds (default: ZR_EVALUATOR_TIMEOUT_SECONDS).",
)
@click.option("--description", default="", help="What the evaluator does.")
@pass_ctx
def create(ctx: CliContext, name: str, command: str, timeout: int | None, description: str) -> None:
    """Register a command evaluator."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        fail(f"evaluator name: {NAME_OK}")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        fail(f"--command cannot be parsed: {exc}")
    if not argv:
        fail("--command is empty")
    with ctx.db.transaction() as session:
        if session.scalar(select(Evaluator.id).where(Evaluator.name == name)) is not None:
            fail(f"an evaluator named {name} already exists")
        session.add(
            Evaluator(
                name=name,
                kind=EvaluatorKind.COMMAND,
                command=command,
                timeout_seconds=timeout,
                description=description,
            )
        )
    click.echo(f"created evaluator {name}")


@group.command(name="list")
@pass_ctx
def list_(ctx: CliContext) -> None:
    """Every evaluator and how many benchmarks use it."""
    with ctx.db.session(read_only=True) as session:
        uses = dict(
            session.execute(
                select(Benchmark.evaluator_id, func.count()).group_by(Benchmark.evaluator_id)
            ).all()
        )
        rows = [
            (e.name, e.kind, e.timeout_seconds or "", uses.get(e.id, 0), e.command or "")
            for e in session.scalars(select(Evaluator).order_by(Evaluator.name))
        ]
    table(["name", "kind", "timeout", "benchmarks", "command"], rows)


@group.command()
@click.argument("name")
@pass_ctx
def show(ctx: CliContext, name: str) -> None:
    """One evaluator in detail."""
    with ctx.db.session(read_only=True) as session:
        evaluator = session.scalar(select(Evaluator).where(Evaluator.name == name))
        if evaluator is None:
            fail(f"no evaluator {name}")
        benchmarks = session.scalars(
            select(Benchmark.id)
            .where(Benchmark.evaluator_id == evaluator.id)
            .order_by(Benchmark.id)
        ).all()
        fields(
            [
                ("name", evaluator.name),
                ("kind", evaluator.kind),
                ("command", evaluator.command or "(built-in)"),
                (
                    "timeout",
                    f"{evaluator.timeout_seconds} s"
                    if evaluator.timeout_seconds
                    else f"default ({ctx.settings.evaluator_timeout_seconds} s)",
                ),
                ("description", evaluator.description),
                ("benchmarks", ", ".join(benchmarks) or "(none)"),
                ("created", evaluator.created_at.isoformat()),
            ]
        )
