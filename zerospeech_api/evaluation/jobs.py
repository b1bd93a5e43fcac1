"""The evaluation queue in the database: enqueue, claim with a lease, renew, requeue, finish.

Every function is one short transaction. Claims are atomic on both backends: PostgreSQL locks the
candidate row with `FOR UPDATE SKIP LOCKED`; SQLite write transactions start with BEGIN IMMEDIATE
(see db/engine.py), so a select and a conditional update inside one are serialised, and the
update's rowcount confirms the job was still queued. A worker writes results only while it still
owns the lease (`lease_owner` matches and the job is `running`), so a job never completes twice.
Every time written or compared here (claim, lease end, expiry) is the database's clock
(`db_now`): a worker whose own clock runs ahead of the others' never finds their leases expired.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, SQLColumnExpression, and_, select, update
from sqlalchemy.orm import Session

from zerospeech_api.db.cluster import db_now, is_postgres
from zerospeech_api.db.engine import Database, rows_changed
from zerospeech_api.db.tables import (
    Benchmark,
    Job,
    JobState,
    Submission,
    SubmissionStatus,
)
from zerospeech_api.errors import Conflict, NotFound
from zerospeech_api.submissions.events import log_event, set_status

ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
# Statuses from which an admin may (re-)run an evaluation.
EVALUABLE = (
    SubmissionStatus.UPLOADED,
    SubmissionStatus.COMPLETED,
    SubmissionStatus.FAILED,
    SubmissionStatus.INVALID,
)
FINAL = (SubmissionStatus.COMPLETED, SubmissionStatus.FAILED, SubmissionStatus.INVALID)

ALREADY_QUEUED = "the submission already has an evaluation queued or running"
NOT_EVALUABLE = "only uploaded, completed, failed or invalid submissions can be evaluated"
LEASE_EXPIRED = "the worker stopped renewing its lease (it died or hung)"
TOO_MANY_ATTEMPTS = "evaluation abandoned after {n} attempts: workers kept dying on it"


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to know about the job it now owns."""

    job_id: int
    submission_id: str
    attempt: int
    owner: str
    claim: int  # the job's claim number: names this attempt's own folder


_Selected = TypeVar("_Selected")


def awaiting_promotion(what: SQLColumnExpression[_Selected] | type[_Selected]) -> Select[_Selected]:
    """Select `what` from the `uploaded` submissions of auto-evaluating benchmarks."""
    return (
        select(what)
        .join(Benchmark, Benchmark.id == Submission.benchmark_id)
        .where(Submission.status == SubmissionStatus.UPLOADED, Benchmark.auto_eval.is_(True))
    )


def _queued() -> ColumnElement[bool]:
    return Job.state == JobState.QUEUED


def lease_expired(now: dt.datetime) -> ColumnElement[bool]:
    """Running jobs whose worker stopped renewing the lease before `now`."""
    return and_(Job.state == JobState.RUNNING, Job.lease_expires_at < now)


def _active_job(session: Session, submission_id: str) -> Job | None:
    return session.scalar(
        select(Job).where(Job.submission_id == submission_id, Job.state.in_(ACTIVE_STATES))
    )


def _queue(session: Session, submission: Submission, *, max_attempts: int, reason: str) -> Job:
    """Add a queued job for the submission and set it `queued`."""
    job = Job(
        submission_id=submission.id,
        state=JobState.QUEUED,
        attempts=0,
        max_attempts=max_attempts,
    )
    session.add(job)
    set_status(
        session=session, submission=submission, status=SubmissionStatus.QUEUED, reason=reason
    )
    return job


def enqueue(*, session: Session, submission_id: str, max_attempts: int, reason: str) -> Job:
    """Queue an evaluation of the submission and set it `queued` (one active job at most)."""
    submission = session.scalar(
        select(Submission).where(Submission.id == submission_id).with_for_update()
    )
    if submission is None:
        raise NotFound(f"no submission {submission_id}")
    if _active_job(session, submission_id) is not None:
        raise Conflict(ALREADY_QUEUED)
    if submission.status not in EVALUABLE:
        raise Conflict(f"{NOT_EVALUABLE} (status is {submission.status})")
    job = _queue(session, submission, max_attempts=max_attempts, reason=reason)
    session.flush()
    return job


@dataclass(frozen=True)
class Pending:
    """What a worker's next round has to do (read without taking any write lock)."""

    uploaded: bool
    expired: bool
    queued: bool


def pending(*, db: Database) -> Pending:
    """Cheap read-only look, so idle workers never take SQLite's write lock just to poll."""
    with db.session(read_only=True) as session:
        uploaded = session.scalar(awaiting_promotion(Submission.id).limit(1))
        expired = session.scalar(select(Job.id).where(lease_expired(db_now(session))).limit(1))
        queued = session.scalar(select(Job.id).where(_queued()).limit(1))
    return Pending(uploaded is not None, expired is not None, queued is not None)


def promote_uploaded(*, db: Database, max_attempts: int, limit: int = 100) -> list[str]:
    """Queue the `uploaded` submissions of auto-evaluating benchmarks; safe to run concurrently."""
    with db.transaction() as session:
        query = awaiting_promotion(Submission).order_by(Submission.updated_at).limit(limit)
        if is_postgres(session):
            # Lock only the submission rows; rows another worker holds are skipped, and a row
            # already moved on is re-checked against the WHERE after the lock (READ COMMITTED).
            query = query.with_for_update(of=Submission, skip_locked=True)
        promoted = []
        for submission in session.scalars(query).all():
            if _active_job(session, submission.id) is not None:
                continue
            _queue(
                session,
                submission,
                max_attempts=max_attempts,
                reason="benchmark evaluates automatically",
            )
            promoted.append(submission.id)
        return promoted


def claim(*, db: Database, owner: str, lease_seconds: int) -> Claimed | None:
    """Take the oldest queued job with a lease and set its submission `evaluating`, or None."""
    for _ in range(20):  # skip over jobs whose submission moved on (cancelled) meanwhile
        with db.transaction() as session:
            query = select(Job).where(_queued()).order_by(Job.id).limit(1)
            if is_postgres(session):
                query = query.with_for_update(skip_locked=True)
            job = session.scalar(query)
            if job is None:
                return None
            now = db_now(session)
            taken = rows_changed(
                session,
                update(Job)
                .where(Job.id == job.id, _queued())
                .values(
                    state=JobState.RUNNING,
                    lease_owner=owner,
                    lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                    attempts=Job.attempts + 1,
                    claims=Job.claims + 1,
                    started_at=now,
                )
                .execution_options(synchronize_session=False),
            )
            if taken != 1:  # cannot happen under the locks above; never run a job twice
                continue
            session.refresh(job)
            submission = session.get(Submission, job.submission_id)
            if submission is None or submission.status != SubmissionStatus.QUEUED:
                status = submission.status if submission else "deleted"
                job.state = JobState.FAILED
                job.finished_at = now
                job.last_error = f"submission is {status}: not evaluated"
                job.lease_owner = None
                continue
            set_status(
                session=session,
                submission=submission,
                status=SubmissionStatus.EVALUATING,
                reason=f"claimed by worker {owner} (attempt {job.attempts}/{job.max_attempts})",
            )
            return Claimed(
                job_id=job.id,
                submission_id=job.submission_id,
                attempt=job.attempts,
                owner=owner,
                claim=job.claims,
            )
    return None


def latest_attempt(*, session: Session, submission_id: str) -> tuple[int, int] | None:
    """(job id, claim number) of the submission's most recent attempt, None if never claimed."""
    row = session.execute(
        select(Job.id, Job.claims)
        .where(Job.submission_id == submission_id, Job.claims > 0)
        .order_by(Job.id.desc())
        .limit(1)
    ).first()
    return (row.id, row.claims) if row else None


def _owned(job_id: int, owner: str) -> ColumnElement[bool]:
    return and_(Job.id == job_id, Job.state == JobState.RUNNING, Job.lease_owner == owner)


def _update_owned(session: Session, job_id: int, owner: str, **values: Any) -> bool:
    """Update the job only while this owner still holds its lease; True if it did."""
    return (
        rows_changed(
            session,
            update(Job)
            .where(_owned(job_id, owner))
            .values(**values)
            .execution_options(synchronize_session=False),
        )
        == 1
    )


def update_owned(*, session: Session, job_id: int, owner: str, **values: Any) -> bool:
    """Set columns of a job (a runner's own records) only while `owner` holds its lease."""
    return _update_owned(session, job_id, owner, **values)


def renew(*, db: Database, job_id: int, owner: str, lease_seconds: int) -> bool:
    """Extend the lease; False means the worker lost the job and must stop without writing."""
    with db.transaction() as session:
        return _update_owned(
            session,
            job_id,
            owner,
            lease_expires_at=db_now(session) + dt.timedelta(seconds=lease_seconds),
        )


def requeue_expired(*, db: Database) -> list[tuple[str, str]]:
    """Re-queue running jobs whose lease expired; past their attempts they fail for good.

    Returns (submission id, new status) pairs.
    """
    changed: list[tuple[str, str]] = []
    with db.transaction() as session:
        now = db_now(session)
        query = select(Job).where(lease_expired(now))
        if is_postgres(session):
            query = query.with_for_update(skip_locked=True)
        for job in session.scalars(query).all():
            submission = session.get(Submission, job.submission_id)
            give_up = job.attempts >= job.max_attempts
            moved = rows_changed(
                session,
                update(Job)
                .where(Job.id == job.id, lease_expired(now), Job.lease_owner == job.lease_owner)
                .values(
                    state=JobState.FAILED if give_up else JobState.QUEUED,
                    lease_owner=None,
                    lease_expires_at=None,
                    finished_at=now if give_up else None,
                    last_error=(
                        TOO_MANY_ATTEMPTS.format(n=job.attempts) if give_up else LEASE_EXPIRED
                    ),
                )
                .execution_options(synchronize_session=False),
            )
            if moved != 1 or submission is None:
                continue
            status = SubmissionStatus.FAILED if give_up else SubmissionStatus.QUEUED
            reason = (
                TOO_MANY_ATTEMPTS.format(n=job.attempts)
                if give_up
                else f"re-queued: {LEASE_EXPIRED} (attempt {job.attempts})"
            )
            set_status(session=session, submission=submission, status=status, reason=reason)
            changed.append((submission.id, status))
    return changed


def release(*, db: Database, job_id: int, owner: str, reason: str) -> bool:
    """Give a job back without counting the attempt (graceful worker stop)."""
    with db.transaction() as session:
        if not _update_owned(
            session,
            job_id,
            owner,
            state=JobState.QUEUED,
            lease_owner=None,
            lease_expires_at=None,
            attempts=Job.attempts - 1,
        ):
            return False
        job = session.get(Job, job_id)
        submission = session.get(Submission, job.submission_id) if job else None
        if submission is not None:
            set_status(
                session=session,
                submission=submission,
                status=SubmissionStatus.QUEUED,
                reason=f"released: {reason}",
            )
        return True


def finish(
    *,
    session: Session,
    job_id: int,
    owner: str,
    status: SubmissionStatus,
    reason: str,
    exit_code: int | None,
    duration: float,
) -> Submission | None:
    """Close the job and set the final status, inside the caller's transaction.

    Returns the submission, or None if this worker no longer owns the job (then nothing is
    written, and the caller must not publish anything).
    """
    if status not in FINAL:
        raise ValueError(f"not a final status: {status}")
    now = db_now(session)
    if not _update_owned(
        session,
        job_id,
        owner,
        state=JobState.DONE if status == SubmissionStatus.COMPLETED else JobState.FAILED,
        lease_owner=None,
        lease_expires_at=None,
        finished_at=now,
        exit_code=exit_code,
        duration_seconds=duration,
        last_error=None if status == SubmissionStatus.COMPLETED else reason[:2000],
    ):
        return None
    job = session.get(Job, job_id)
    submission = session.get(Submission, job.submission_id) if job else None
    if submission is None:
        return None
    extra = f" (exit code {exit_code})" if exit_code is not None else ""
    log_event(
        session=session,
        submission_id=submission.id,
        message=f"evaluation took {duration:.2f} s{extra}",
    )
    set_status(session=session, submission=submission, status=status, reason=reason)
    return submission
