"""Status changes and log lines of a submission, always recorded with time and reason."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from zerospeech_api.db.cluster import db_now
from zerospeech_api.db.tables import Submission, SubmissionEvent, SubmissionStatus


def set_status(
    *, session: Session, submission: Submission, status: SubmissionStatus, reason: str
) -> None:
    """Move the submission to `status` and log the change with its reason."""
    now = db_now(session)  # the one clock of every host (ages are compared with it)
    previous = submission.status
    submission.status = status
    submission.updated_at = now
    session.add(
        SubmissionEvent(
            submission_id=submission.id,
            at=now,
            status=status,
            message=f"{previous} -> {status}: {reason}" if previous else f"{status}: {reason}",
        )
    )


def log_event(*, session: Session, submission_id: str, message: str) -> None:
    """Add a message to the submission's log without changing its status."""
    session.add(SubmissionEvent(submission_id=submission_id, at=db_now(session), message=message))


def submission_events(*, session: Session, submission_id: str) -> Sequence[SubmissionEvent]:
    """The submission's log, oldest first."""
    return session.scalars(
        select(SubmissionEvent)
        .where(SubmissionEvent.submission_id == submission_id)
        .order_by(SubmissionEvent.at, SubmissionEvent.id)
    ).all()
