"""`submissions` admin commands."""

import click


@click.group(name="submissions")
def group() -> None:
    """Manage submissions."""


# --- evaluation (appended by the evaluation area) -------------------------------------------


@group.command()
@click.argument("submission_id")
@click.pass_obj
def evaluate(obj: object, submission_id: str) -> None:
    """Queue an evaluation of an uploaded submission, or re-run a completed/failed/invalid one."""
    from zerospeech_api.cli.context import CliContext
    from zerospeech_api.cli.output import fail
    from zerospeech_api.errors import DomainError
    from zerospeech_api.evaluation.jobs import enqueue

    assert isinstance(obj, CliContext)
    try:
        with obj.db.transaction() as session:
            enqueue(
                session=session,
                submission_id=submission_id,
                max_attempts=obj.settings.job_max_attempts,
                reason="queued by an administrator (submissions evaluate)",
            )
    except DomainError as exc:
        fail(exc.detail)
    finally:
        obj.db.dispose()
    click.echo(f"submission {submission_id} queued for evaluation")
