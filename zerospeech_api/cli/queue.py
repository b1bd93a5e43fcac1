"""`queue`: the evaluation queue, the workers and every stuck state with the command that fixes
it (evaluation/health.py; the workers' watchdog applies the same check)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from zerospeech_api.cli.context import CliContext, pass_ctx
from zerospeech_api.cli.output import printable, table
from zerospeech_api.evaluation.health import QueueReport, duration, queue_report


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def report_json(report: QueueReport) -> dict[str, Any]:
    """The report as JSON-ready data: times in ISO 8601 UTC, ages in seconds."""
    now = report.generated_at
    return {
        "generated_at": _time(now),
        "queue": [
            {
                "submission_id": i.submission_id,
                "status": i.status,
                "benchmark": i.benchmark_id,
                "since": _time(i.since),
                "age_seconds": round((now - i.since).total_seconds(), 1),
                "job_id": i.job_id,
                "attempts": i.attempts,
                "max_attempts": i.max_attempts,
                "worker": i.worker,
                "node": i.node,
                "lease_expires_at": _time(i.lease_expires_at),
            }
            for i in report.items
        ],
        "workers": [
            {
                "id": w.id,
                "node": w.node,
                "pid": w.pid,
                "started_at": _time(w.started_at),
                "last_seen_at": _time(w.last_seen_at),
                "last_seen_seconds": round((now - w.last_seen_at).total_seconds(), 1),
                "current_job_id": w.current_job_id,
                "current_submission_id": w.current_submission_id,
                "alive": w.alive,
            }
            for w in report.workers
        ],
        "problems": [p.as_dict() for p in report.problems],
    }


def print_report(report: QueueReport) -> None:
    """The report as three sections for a terminal (user text escaped)."""
    now = report.generated_at
    running = sum(i.status == "evaluating" for i in report.items)
    click.echo(f"queue: {running} evaluating, {len(report.items) - running} waiting")
    table(
        ("submission", "status", "benchmark", "age", "attempts", "worker", "node"),
        [
            (
                i.submission_id,
                i.status,
                i.benchmark_id,
                duration((now - i.since).total_seconds()),
                "-" if i.attempts is None else f"{i.attempts}/{i.max_attempts}",
                i.worker or "-",
                i.node or "-",
            )
            for i in report.items
        ],
    )
    alive = sum(w.alive for w in report.workers)
    click.echo(f"\nworkers: {alive} alive")
    table(
        ("worker", "node", "pid", "started", "last seen", "job", "state"),
        [
            (
                w.id,
                w.node,
                w.pid,
                _time(w.started_at),
                f"{duration((now - w.last_seen_at).total_seconds())} ago",
                w.current_submission_id or "-",
                "alive" if w.alive else "dead",
            )
            for w in report.workers
        ],
    )
    click.echo(f"\nproblems: {len(report.problems) or 'none'}")
    for problem in report.problems:
        fixed_by = " (the watchdog fixes this)" if problem.fixable else ""
        click.echo(f"- [{problem.kind}] {printable(problem.reason)}{fixed_by}")
        click.echo(f"  fix: {printable(problem.command)}")


@click.command(name="queue")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@pass_ctx
def command(ctx: CliContext, as_json: bool) -> None:
    """The evaluation queue: waiting and running submissions, workers, and what is stuck."""
    with ctx.db.session(read_only=True) as session:
        report = queue_report(session=session, settings=ctx.settings)
    if as_json:
        click.echo(json.dumps(report_json(report), indent=2, ensure_ascii=False))
    else:
        print_report(report)
