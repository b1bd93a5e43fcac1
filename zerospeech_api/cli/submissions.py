"""`submissions` admin commands: list, show, delete, set-status, rejoin, evaluate, cancel."""

from __future__ import annotations

import click
from sqlalchemy import select

from zerospeech_api.cli.context import CliContext, pass_ctx
from zerospeech_api.cli.output import domain_errors, fail, fields, printable, table, yes_no
from zerospeech_api.db.tables import SubmissionStatus, User
from zerospeech_api.submissions import service
from zerospeech_api.submissions.assembly import JoinFailed, join_submission
from zerospeech_api.submissions.events import submission_events

STATUSES = [str(s) for s in SubmissionStatus]


@click.group(name="submissions")
def group() -> None:
    """Manage submissions (find, inspect, unstick, delete)."""


@group.command(name="list")
@click.option("--user", "username", help="Only this user's submissions.")
@click.option("--benchmark", help="Only this benchmark's submissions.")
@click.option("--status", type=click.Choice(STATUSES), help="Only submissions in this status.")
@pass_ctx
def list_(ctx: CliContext, username: str | None, benchmark: str | None, status: str | None) -> None:
    """Submissions, newest first."""
    with ctx.db.session(read_only=True) as session:
        user = None
        if username is not None:
            user = session.scalar(select(User).where(User.username == username))
            if user is None:
                fail(f"no user {username}")
        found = service.list_submissions(
            session=session, user=user, benchmark_id=benchmark, status=status, with_parts=True
        )
        rows = [
            (
                s.id,
                s.user.username,
                s.benchmark_id,
                s.model_id,
                s.status,
                f"{sum(p.received_at is not None for p in s.parts)}/{len(s.parts)}",
                s.created_at.isoformat(timespec="seconds"),
            )
            for s in found
        ]
    table(("id", "user", "benchmark", "model", "status", "parts", "created"), rows)


@group.command()
@click.argument("submission_id", metavar="ID")
@pass_ctx
def show(ctx: CliContext, submission_id: str) -> None:
    """One submission, its parts and its log."""
    with domain_errors(), ctx.db.session(read_only=True) as session:
        s = service.get_submission(session=session, submission_id=submission_id)
        fields(
            [
                ("id", s.id),
                ("user", s.user.username),
                ("benchmark", s.benchmark_id),
                ("model", s.model_id),
                ("status", s.status),
                ("archive", f"{s.filename} (MD5 {s.archive_hash})"),
                ("size", "-" if s.archive_size is None else f"{s.archive_size:,} bytes"),
                ("multipart", yes_no(s.multipart)),
                ("has scores", yes_no(s.has_scores)),
                ("leaderboard", s.leaderboard_path or "-"),
                ("author label", s.author_label or "-"),
                ("created", s.created_at.isoformat(timespec="seconds")),
                ("updated", s.updated_at.isoformat(timespec="seconds")),
            ]
        )
        click.echo("\nparts:")
        table(
            ("#", "name", "size", "md5", "received"),
            [
                (
                    p.position,
                    p.filename,
                    "-" if p.size is None else p.size,
                    p.md5,
                    p.received_at.isoformat(timespec="seconds") if p.received_at else "-",
                )
                for p in s.parts
            ],
        )
        events = submission_events(session=session, submission_id=s.id)
        click.echo("\nlog:")
        for event in events:
            click.echo(f"{event.at.isoformat(timespec='seconds')}  {printable(event.message)}")


@group.command()
@click.argument("submission_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def delete(ctx: CliContext, submission_id: str, yes: bool) -> None:
    """Delete a submission with its files, log, jobs and leaderboard entries."""
    if not yes:
        click.confirm(f"delete submission {submission_id} and all its files?", abort=True)
    with domain_errors(), ctx.db.session() as session:
        submission = service.get_submission(session=session, submission_id=submission_id)
        service.delete_submission(
            session=session, settings=ctx.settings, submission=submission, by_admin=True
        )
    click.echo(f"deleted submission {submission_id}")


@group.command(name="set-status")
@click.argument("submission_id", metavar="ID")
@click.argument("status", type=click.Choice(STATUSES))
@click.option("--reason", required=True, help="Why (recorded in the submission's log).")
@pass_ctx
def set_status(ctx: CliContext, submission_id: str, status: str, reason: str) -> None:
    """Force a submission's status (recorded in its log with the reason)."""
    if not reason.strip():
        fail("--reason must say why")
    with domain_errors(), ctx.db.transaction() as session:
        submission = service.get_submission(session=session, submission_id=submission_id)
        previous = submission.status
        service.admin_set_status(
            session=session,
            settings=ctx.settings,
            submission=submission,
            status=SubmissionStatus(status),
            reason=reason,
        )
    click.echo(f"submission {submission_id}: {previous} -> {status}")


@group.command()
@click.argument("submission_id", metavar="ID")
@pass_ctx
def rejoin(ctx: CliContext, submission_id: str) -> None:
    """Join the parts of a fully received upload now (servers also retry this periodically)."""
    with domain_errors(), ctx.db.session(read_only=True) as session:
        submission = service.get_submission(session=session, submission_id=submission_id)
        missing = [p.filename for p in submission.parts if p.received_at is None]
        status = submission.status
    if status != SubmissionStatus.UPLOADING:
        fail(f"submission {submission_id} is {status}: nothing to join")
    if missing:
        fail(f"parts not received yet: {', '.join(missing)}")
    try:
        result = join_submission(settings=ctx.settings, db=ctx.db, submission_id=submission_id)
    except JoinFailed as exc:
        fail(str(exc))
    if result is None:
        fail("another process is joining it right now, or it moved on: see `submissions show`")
    click.echo(f"submission {submission_id}: {result}")


# --- evaluation (appended by the evaluation area) -------------------------------------------


@group.command()
@click.argument("submission_id", metavar="ID")
@pass_ctx
def evaluate(ctx: CliContext, submission_id: str) -> None:
    """Queue an evaluation of an uploaded submission, or re-run a completed/failed/invalid one."""
    from zerospeech_api.evaluation.jobs import enqueue

    with domain_errors(), ctx.db.transaction() as session:
        enqueue(
            session=session,
            submission_id=submission_id,
            max_attempts=ctx.settings.job_max_attempts,
            reason="queued by an administrator (submissions evaluate)",
        )
    click.echo(f"submission {submission_id} queued for evaluation")


@group.command()
@click.argument("submission_id", metavar="ID")
@pass_ctx
def cancel(ctx: CliContext, submission_id: str) -> None:
    """Cancel an uploaded, queued or evaluating submission (as POST /submissions/ID/cancel)."""
    from zerospeech_api.evaluation.queue import cancel_submission

    with domain_errors(), ctx.db.transaction() as session:
        submission = service.get_submission(session=session, submission_id=submission_id)
        stopped = cancel_submission(session=session, submission=submission, by=None)
    if stopped:
        click.echo(
            f"submission {submission_id} cancelled; its worker stops the running evaluation "
            "within seconds (local: the process group is killed; Slurm: scancel)"
        )
    else:
        click.echo(f"submission {submission_id} cancelled")
