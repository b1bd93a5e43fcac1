"""The participant's side of the evaluation queue: position, estimated start, cancel.

Cancelling marks the submission's active job `cancelled` in the same transaction that sets the
submission `cancelled`: a queued job is then never claimed, and a worker evaluating it fails
its next lease renewal (and its final write), so it stops and writes nothing. The job row is
updated before the submission row is locked, the order `claim` and `finish` use, so a cancel
racing a claim on PostgreSQL waits for it instead of deadlocking.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from zerospeech_api.db.engine import rows_changed
from zerospeech_api.db.tables import Job, JobState, Submission, SubmissionStatus, User, utcnow
from zerospeech_api.errors import Conflict
from zerospeech_api.submissions.events import set_status

CANCELLABLE = (SubmissionStatus.UPLOADED, SubmissionStatus.QUEUED, SubmissionStatus.EVALUATING)
CANNOT_CANCEL = (
    "a submission that is {status} cannot be cancelled (only while uploaded, queued or evaluating)"
)
COMMAND_LINE = "command line"  # who cancelled, for `submissions cancel`
# How many recent evaluations the typical duration is taken from.
RECENT_JOBS = 20


@dataclass(frozen=True)
class QueueSpot:
    """Where a queued submission stands: 1 is the next job a free worker claims."""

    position: int
    estimated_start: dt.datetime | None


def typical_duration(*, session: Session) -> float | None:
    """Mean duration in seconds of the latest finished evaluations, None without any."""
    rows = session.scalars(
        select(Job.duration_seconds)
        .where(Job.duration_seconds.is_not(None), Job.finished_at.is_not(None))
        .order_by(Job.finished_at.desc())
        .limit(RECENT_JOBS)
    )
    durations = [seconds for seconds in rows if seconds is not None]  # the query keeps no NULL
    return sum(durations) / len(durations) if durations else None


def queue_spots(
    *, session: Session, submission_ids: Iterable[str], now: dt.datetime | None = None
) -> dict[str, QueueSpot]:
    """Queue position and estimated start of each of these submissions that has a queued job.

    The estimate assumes one worker per running job (at least one) and that every evaluation
    takes the recent mean; workers are claimed in job order, as `claim` does.
    """
    wanted = set(submission_ids)
    now = now or utcnow()
    queued = session.execute(
        select(Job.submission_id).where(Job.state == JobState.QUEUED).order_by(Job.id)
    ).all()
    if not wanted.intersection(row.submission_id for row in queued):
        return {}
    typical = typical_duration(session=session)
    running = session.scalars(select(Job.started_at).where(Job.state == JobState.RUNNING)).all()
    # Seconds from now until each worker is free (a heap: the next job goes to the first free).
    free = [
        max(0.0, typical - (now - started).total_seconds()) if typical and started else 0.0
        for started in running
    ] or [0.0]
    heapq.heapify(free)
    spots = {}
    for position, row in enumerate(queued, 1):
        start = heapq.heappop(free)
        heapq.heappush(free, start + (typical or 0.0))
        if row.submission_id in wanted:
            estimate = now + dt.timedelta(seconds=start) if typical is not None else None
            spots[row.submission_id] = QueueSpot(position=position, estimated_start=estimate)
    return spots


def _cancel_jobs(session: Session, submission_id: str, state: JobState, by: str) -> int:
    """Mark the submission's jobs in `state` cancelled; returns how many."""
    return rows_changed(
        session,
        update(Job)
        .where(Job.submission_id == submission_id, Job.state == state)
        .values(
            state=JobState.CANCELLED,
            lease_owner=None,
            lease_expires_at=None,
            finished_at=utcnow(),
            last_error=f"cancelled by {by}",
        )
        .execution_options(synchronize_session=False),
    )


def cancel_submission(*, session: Session, submission: Submission, by: User | None) -> bool:
    """Cancel an uploaded, queued or evaluating submission (owner or admin; the caller checks
    who; None is an operator at the command line). Returns True if a running evaluation was
    told to stop (its worker kills the process group, or cancels the Slurm job)."""
    if submission.status not in CANCELLABLE:
        raise Conflict(CANNOT_CANCEL.format(status=submission.status))
    name = by.username if by is not None else COMMAND_LINE
    stopped = _cancel_jobs(session, submission.id, JobState.RUNNING, name) > 0
    _cancel_jobs(session, submission.id, JobState.QUEUED, name)
    # Re-read under a lock: an evaluation may have finished since the check above.
    session.refresh(submission, with_for_update=True)
    if submission.status not in CANCELLABLE:
        raise Conflict(CANNOT_CANCEL.format(status=submission.status))
    owner = by is not None and not (by.admin and by.id != submission.user_id)
    reason = f"cancelled by {'its owner' if owner else 'an administrator'} ({name})"
    if stopped:
        reason += "; the running evaluation was stopped"
    set_status(
        session=session, submission=submission, status=SubmissionStatus.CANCELLED, reason=reason
    )
    session.flush()
    return stopped
