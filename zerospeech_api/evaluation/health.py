"""Health of the evaluation side: which workers are alive, what waits and runs, what is stuck.

A worker writes its row in `workers` every `worker_heartbeat_seconds` (heartbeat.py); one not
heard from for HEARTBEAT_MISSES intervals is dead. `find_problems` is the one list of stuck
states, each with a stable key (one alert per problem), a reason and the command that fixes it:
the `queue` command prints it, the watchdog (watchdog.py) fixes the `fixable` ones and alerts on
the rest, and /metrics may count it. Everything here only reads, in one read-only session.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Row, func, or_, select
from sqlalchemy.orm import Session

from zerospeech_api.db.cluster import db_now
from zerospeech_api.db.tables import (
    Benchmark,
    Evaluator,
    EvaluatorKind,
    EvaluatorRunner,
    Job,
    JobState,
    Submission,
    SubmissionPart,
    SubmissionStatus,
    WorkerHeartbeat,
    utcnow,
)
from zerospeech_api.evaluation.evaluators import CLEAN_PATH
from zerospeech_api.evaluation.jobs import ACTIVE_STATES, awaiting_promotion, lease_expired
from zerospeech_api.settings import Settings

HEARTBEAT_MISSES = 3
# At most this many problems of one kind (and queue rows) are listed: enough to act on.
LIMIT = 200

# The kinds of stuck state. The first three the watchdog fixes itself (re-queue, re-join).
NOT_QUEUED = "not-queued"
NOT_JOINED = "not-joined"
LEASE_EXPIRED = "lease-expired"
OVERDUE = "overdue"
NO_WORKER = "no-worker"
EVALUATOR_MISSING = "evaluator-missing"
FIXABLE = frozenset({NOT_QUEUED, NOT_JOINED, LEASE_EXPIRED})

START_WORKERS = (
    "start workers: `zerospeech-api ctl start worker:*` under supervise "
    "(with ZR_WORKER_PROCESSES of at least 1), or `zerospeech-api worker`"
)


@dataclass(frozen=True)
class Problem:
    """One stuck state: `key` is stable while the state lasts, `command` says what fixes it."""

    key: str
    kind: str
    reason: str
    command: str
    submission_id: str | None = None
    benchmark_id: str | None = None

    @property
    def fixable(self) -> bool:
        """True if the watchdog fixes it by itself (re-queue, re-join)."""
        return self.kind in FIXABLE

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with `fixable`."""
        return {**asdict(self), "fixable": self.fixable}


def alive_since(settings: Settings, now: dt.datetime | None = None) -> dt.datetime:
    """The oldest `last_seen_at` of a worker still counted alive."""
    return (now or utcnow()) - dead_after(settings)


def dead_after(settings: Settings) -> dt.timedelta:
    """How long a worker may stay silent and still count alive."""
    return dt.timedelta(seconds=settings.worker_heartbeat_seconds * HEARTBEAT_MISSES)


def alive_workers(*, session: Session, settings: Settings) -> list[WorkerHeartbeat]:
    """Workers heard from recently, newest first."""
    return list(
        session.scalars(
            select(WorkerHeartbeat)
            .where(WorkerHeartbeat.last_seen_at >= alive_since(settings, db_now(session)))
            .order_by(WorkerHeartbeat.last_seen_at.desc())
        )
    )


def duration(seconds: float) -> str:
    """A short human duration: `45s`, `12m05s`, `3h07m`, `2d04h`."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _seconds_since(at: dt.datetime | None, now: dt.datetime) -> float:
    """Seconds from `at` to `now`, for a time the query selected as set (a NULL column it
    filtered out, or an aggregate of set ones): a NULL here is a broken query, not a duration."""
    if at is None:
        raise ValueError("the query selected a row without the time it filters on")
    return (now - at).total_seconds()


def node_of(identity: str) -> str:
    """The host part of a worker identity (`host:pid:random`)."""
    return identity.rsplit(":", 2)[0]


def find_problems(
    *, session: Session, settings: Settings, now: dt.datetime | None = None
) -> list[Problem]:
    """Every stuck state of the evaluation queue, in a fixed order of kinds (ages by the
    database's clock unless `now` is given)."""
    now = now or db_now(session)
    return [
        *_not_queued(session, settings, now),
        *_not_joined(session, settings, now),
        *_lease_expired(session, settings, now),
        *_overdue(session, settings, now),
        *_no_worker(session, settings, now),
        *_evaluator_missing(session, now),
    ]


def _not_queued(session: Session, settings: Settings, now: dt.datetime) -> list[Problem]:
    # Any live worker queues these at its next poll: still there after the dead-worker window,
    # nobody did.
    rows = _unqueued(session, before=now - dead_after(settings))
    return [
        Problem(
            key=f"{NOT_QUEUED}:{sid}",
            kind=NOT_QUEUED,
            reason=f"submission {sid} was uploaded {duration((now - at).total_seconds())} ago "
            f"on {benchmark}, which evaluates automatically, but was never queued",
            command=f"zerospeech-api submissions evaluate {sid}",
            submission_id=sid,
            benchmark_id=benchmark,
        )
        for sid, benchmark, at in rows
    ]


def _not_joined(session: Session, settings: Settings, now: dt.datetime) -> list[Problem]:
    # Every server process retries due joins each `upload_recovery_seconds`: two missed passes
    # mean the join keeps failing (a full disk) or nobody is running it.
    grace = dt.timedelta(seconds=2 * settings.upload_recovery_seconds)
    last = func.max(SubmissionPart.received_at)
    rows = session.execute(
        select(Submission.id, Submission.benchmark_id, func.count(SubmissionPart.id), last)
        .join(SubmissionPart, SubmissionPart.submission_id == Submission.id)
        .where(Submission.status == SubmissionStatus.UPLOADING)
        .group_by(Submission.id, Submission.benchmark_id)
        .having(
            func.count(SubmissionPart.received_at) == func.count(SubmissionPart.id),
            last < now - grace,
        )
        .order_by(last)
        .limit(LIMIT)
    ).all()
    return [
        Problem(
            key=f"{NOT_JOINED}:{sid}",
            kind=NOT_JOINED,
            reason=f"submission {sid} ({benchmark}): all {count} part(s) received "
            f"{duration(_seconds_since(at, now))} ago, but never joined into its archive",
            command=f"zerospeech-api submissions rejoin {sid}",
            submission_id=sid,
            benchmark_id=benchmark,
        )
        for sid, benchmark, count, at in rows
    ]


def _lease_expired(session: Session, settings: Settings, now: dt.datetime) -> list[Problem]:
    # A live worker re-queues these at its next poll; past the dead-worker window, none did.
    rows = session.execute(
        select(Job.id, Job.submission_id, Job.lease_owner, Job.lease_expires_at, Submission)
        .join(Submission, Submission.id == Job.submission_id)
        .where(lease_expired(now - dead_after(settings)))
        .order_by(Job.id)
        .limit(LIMIT)
    ).all()
    return [
        Problem(
            key=f"{LEASE_EXPIRED}:{sid}:{job_id}",
            kind=LEASE_EXPIRED,
            reason=f"submission {sid} ({submission.benchmark_id}): worker {owner} stopped "
            f"renewing its lease {duration(_seconds_since(expires, now))} ago (it died)",
            command="any running worker re-queues it (`zerospeech-api worker --once` does)",
            submission_id=sid,
            benchmark_id=submission.benchmark_id,
        )
        for job_id, sid, owner, expires, submission in rows
    ]


def time_limit(evaluator: Evaluator | None, settings: Settings) -> float:
    """The evaluator's time limit in seconds (as the worker applies it)."""
    return float(
        (evaluator.timeout_seconds if evaluator else None) or settings.evaluator_timeout_seconds
    )


def _overdue(session: Session, settings: Settings, now: dt.datetime) -> list[Problem]:
    rows = session.execute(
        select(Job, Submission.benchmark_id, Evaluator, WorkerHeartbeat)
        .join(Submission, Submission.id == Job.submission_id)
        .join(Benchmark, Benchmark.id == Submission.benchmark_id)
        .outerjoin(Evaluator, Evaluator.id == Benchmark.evaluator_id)
        .outerjoin(WorkerHeartbeat, WorkerHeartbeat.id == Job.lease_owner)
        .where(
            Job.state == JobState.RUNNING,
            Job.lease_expires_at >= now - dead_after(settings),
            Job.started_at.is_not(None),
            # A Slurm job may wait in the cluster's queue for hours, and once it runs Slurm
            # itself ends it at its time limit: only a local evaluation can overstay.
            Job.slurm_active.is_(False),
        )
        .order_by(Job.started_at)
    ).all()
    problems = []
    for job, benchmark, evaluator, worker in rows:
        limit = time_limit(evaluator, settings)
        running = _seconds_since(job.started_at, now)
        if running <= limit + settings.evaluation_overdue_seconds:
            continue
        owner = job.lease_owner or "?"
        node = worker.node if worker else node_of(owner)
        pid = str(worker.pid) if worker else "PID"
        problems.append(
            Problem(
                key=f"{OVERDUE}:{job.submission_id}:{job.id}:{job.claims}",
                kind=OVERDUE,
                reason=f"submission {job.submission_id} ({benchmark}) has been evaluating for "
                f"{duration(running)}, past its time limit of {limit:g} s, on worker {owner}",
                command=f"on {node}: `kill {pid}` (the worker gives the job back and supervise "
                f"starts a new one; `kill -9 {pid}` if it is still there after "
                "ZR_WORKER_STOP_GRACE_SECONDS)",
                submission_id=job.submission_id,
                benchmark_id=benchmark,
            )
        )
    return problems[:LIMIT]


def _no_worker(session: Session, settings: Settings, now: dt.datetime) -> list[Problem]:
    if alive_workers(session=session, settings=settings):
        return []
    window = dead_after(settings)
    # Work that only a worker moves on: queued jobs, jobs of dead workers, unqueued uploads.
    waiting = [
        *session.scalars(select(Job.created_at).where(Job.state == JobState.QUEUED)),
        *session.scalars(select(Job.lease_expires_at).where(lease_expired(now))),
        *session.scalars(awaiting_promotion(Submission.updated_at)),
    ]
    if not waiting or now - min(waiting) < window:
        return []
    last = session.scalar(
        select(WorkerHeartbeat).order_by(WorkerHeartbeat.last_seen_at.desc()).limit(1)
    )
    seen = (
        f"; last heard: worker {last.id} on {last.node}, "
        f"{duration((now - last.last_seen_at).total_seconds())} ago"
        if last
        else "; no worker has ever reported"
    )
    return [
        Problem(
            key=NO_WORKER,
            kind=NO_WORKER,
            reason=f"{len(waiting)} submission(s) wait for evaluation, the oldest for "
            f"{duration((now - min(waiting)).total_seconds())}, and no worker is alive "
            f"(none reported in {window.total_seconds():g} s){seen}",
            command=START_WORKERS,
        )
    ]


def missing_program(command: str | None) -> str | None:
    """Why a command evaluator cannot start on this host (its program is not there), or None.

    A bare name is looked up in the evaluator's PATH; a relative path with a `/` is relative to
    the unpacked archive, so it cannot be checked here."""
    try:
        argv = shlex.split(command or "")
    except ValueError as exc:
        return f"its command cannot be parsed ({exc})"
    if not argv:
        return "it has no command"
    program = argv[0]
    if "/" not in program:
        found = shutil.which(program, path=CLEAN_PATH)
        return None if found else f"its program {program!r} is not in {CLEAN_PATH}"
    if os.path.isabs(program) and not (os.path.isfile(program) and os.access(program, os.X_OK)):
        return f"its program {program} does not exist or is not executable"
    return None


def _evaluator_missing(session: Session, now: dt.datetime) -> list[Problem]:
    waiting = select(Submission.benchmark_id).join(Job, Job.submission_id == Submission.id)
    rows = session.execute(
        select(Benchmark.id, Evaluator.name, Evaluator.command, Evaluator.runner)
        .join(Evaluator, Evaluator.id == Benchmark.evaluator_id)
        .where(
            Evaluator.kind == EvaluatorKind.COMMAND,
            or_(
                Benchmark.active.is_(True),
                Benchmark.id.in_(waiting.where(Job.state.in_(ACTIVE_STATES))),
            ),
        )
        .order_by(Benchmark.id)
    ).all()
    host = socket.gethostname()
    problems = []
    for benchmark, name, command, runner in rows:
        # A Slurm evaluator's program lives on the compute nodes: here only sbatch must be.
        if runner == EvaluatorRunner.SLURM:
            why = None if shutil.which("sbatch") else "`sbatch` (its runner is slurm) is missing"
        else:
            why = missing_program(command)
        if why is None:
            continue
        problems.append(
            Problem(
                key=f"{EVALUATOR_MISSING}:{benchmark}",
                kind=EVALUATOR_MISSING,
                reason=f"benchmark {benchmark} is evaluated by {name}, but on {host} {why}",
                command=f"install it on every worker node (`zerospeech-api evaluators show "
                f"{name}`), or `zerospeech-api benchmarks update {benchmark} --evaluator NAME`",
                benchmark_id=benchmark,
            )
        )
    return problems[:LIMIT]


@dataclass(frozen=True)
class QueueItem:
    """A submission waiting for or under evaluation."""

    submission_id: str
    status: str
    benchmark_id: str
    since: dt.datetime  # queued (job created), started, or uploaded
    job_id: int | None = None
    attempts: int | None = None
    max_attempts: int | None = None
    worker: str | None = None
    node: str | None = None
    lease_expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as it last reported itself."""

    id: str
    node: str
    pid: int
    started_at: dt.datetime
    last_seen_at: dt.datetime
    current_job_id: int | None
    current_submission_id: str | None
    alive: bool


@dataclass(frozen=True)
class QueueReport:
    """What `zerospeech-api queue` shows: the queue, the workers and what is stuck."""

    generated_at: dt.datetime
    items: list[QueueItem] = field(default_factory=list)
    workers: list[WorkerInfo] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def queue_report(
    *, session: Session, settings: Settings, now: dt.datetime | None = None
) -> QueueReport:
    """Running jobs, then queued ones in claim order, then uploads waiting to be queued."""
    now = now or db_now(session)
    return QueueReport(
        generated_at=now,
        items=[*_job_items(session), *_unqueued_items(session)][:LIMIT],
        workers=_workers(session, settings, now),
        problems=find_problems(session=session, settings=settings, now=now),
    )


def _job_items(session: Session) -> list[QueueItem]:
    rows = session.execute(
        select(Job, Submission.status, Submission.benchmark_id, WorkerHeartbeat.node)
        .join(Submission, Submission.id == Job.submission_id)
        .outerjoin(WorkerHeartbeat, WorkerHeartbeat.id == Job.lease_owner)
        .where(Job.state.in_(ACTIVE_STATES))
        .order_by((Job.state == JobState.RUNNING).desc(), Job.id)
        .limit(LIMIT)
    ).all()
    return [
        QueueItem(
            submission_id=job.submission_id,
            status=status,
            benchmark_id=benchmark,
            since=job.started_at
            if job.state == JobState.RUNNING and job.started_at
            else job.created_at,
            job_id=job.id,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            worker=job.lease_owner,
            node=node or (node_of(job.lease_owner) if job.lease_owner else None),
            lease_expires_at=job.lease_expires_at,
        )
        for job, status, benchmark, node in rows
    ]


def _unqueued(
    session: Session, *, before: dt.datetime | None = None
) -> Sequence[Row[str, str, dt.datetime]]:
    """Uploads waiting to be queued (no active job), oldest first, as (id, benchmark, uploaded
    at); with `before`, only those uploaded before it."""
    query = (
        awaiting_promotion(Submission.id)
        .add_columns(Submission.benchmark_id, Submission.updated_at)
        .where(~Submission.id.in_(select(Job.submission_id).where(Job.state.in_(ACTIVE_STATES))))
    )
    if before is not None:
        query = query.where(Submission.updated_at < before)
    return session.execute(query.order_by(Submission.updated_at).limit(LIMIT)).all()


def _unqueued_items(session: Session) -> list[QueueItem]:
    return [
        QueueItem(submission_id=sid, status=SubmissionStatus.UPLOADED, benchmark_id=b, since=at)
        for sid, b, at in _unqueued(session)
    ]


def _workers(session: Session, settings: Settings, now: dt.datetime) -> list[WorkerInfo]:
    rows = session.execute(
        select(WorkerHeartbeat, Job.submission_id)
        .outerjoin(Job, Job.id == WorkerHeartbeat.current_job_id)
        .order_by(WorkerHeartbeat.node, WorkerHeartbeat.started_at)
        .limit(LIMIT)
    ).all()
    cutoff = alive_since(settings, now)
    return [
        WorkerInfo(
            id=w.id,
            node=w.node,
            pid=w.pid,
            started_at=w.started_at,
            last_seen_at=w.last_seen_at,
            current_job_id=w.current_job_id,
            current_submission_id=sid,
            alive=w.last_seen_at >= cutoff,
        )
        for w, sid in rows
    ]
