"""The evaluation worker: promote, requeue expired, claim, unpack, evaluate, publish, notify.

No database transaction is held during slow work: each step is its own short transaction, and
results are written only while this worker still owns the job's lease. A background thread
renews the lease; if renewal fails the evaluation is stopped and nothing is written. SIGTERM lets
the current job finish within `worker_stop_grace_seconds`, then releases it and exits.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from sqlalchemy import select

from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import (
    EvaluatorKind,
    Leaderboard,
    Submission,
    SubmissionStatus,
)
from zerospeech_api.evaluation import jobs
from zerospeech_api.evaluation.evaluators import (
    Cancelled,
    LogSink,
    Outcome,
    SubmissionFacts,
    results_path,
    run_command,
    run_scores,
    submission_facts,
    write_results,
)
from zerospeech_api.evaluation.unpack import UnpackError, UnpackInterrupted, unpack
from zerospeech_api.leaderboards.service import publish, unpublish
from zerospeech_api.mail import Mailer
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage
from zerospeech_api.submissions.events import log_event

log = logging.getLogger("zerospeech_api.worker")

LEASE_LOST = "lease lost: another worker may have taken the job"
STOPPING = "worker stopping (SIGTERM) before the evaluation finished"


def worker_identity() -> str:
    """hostname:pid:random, unique across hosts and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class JobPlan:
    """Everything read from the database before the slow work starts."""

    facts: SubmissionFacts
    evaluator_kind: str
    command: str | None
    timeout: float
    leaderboard_paths: list[str]


class Heartbeat(threading.Thread):
    """Renews the lease while a job runs; sets `reason` when the job must stop."""

    def __init__(self, worker: Worker, claimed: jobs.Claimed) -> None:
        super().__init__(name="lease-heartbeat", daemon=True)
        self.worker = worker
        self.claimed = claimed
        self.reason: str | None = None
        self.lost = False
        self._done = threading.Event()

    def run(self) -> None:
        settings = self.worker.settings
        interval = max(0.5, settings.job_lease_seconds / 3)
        next_renewal = time.monotonic() + interval
        while not self._done.wait(0.1):
            now = time.monotonic()
            stop_at = self.worker.stop_requested_at
            if stop_at is not None and now - stop_at >= settings.worker_stop_grace_seconds:
                self.reason = self.reason or STOPPING
            if now < next_renewal:
                continue
            try:
                ok = jobs.renew(
                    db=self.worker.db,
                    job_id=self.claimed.job_id,
                    owner=self.claimed.owner,
                    lease_seconds=settings.job_lease_seconds,
                )
            except Exception as exc:  # a database hiccup: retry soon; expiry decides
                log.warning("lease renewal failed: %s", type(exc).__name__)
                next_renewal = now + 1
                continue
            if not ok:
                self.lost = True
                self.reason = LEASE_LOST
                return
            next_renewal = now + interval

    def stop(self) -> None:
        self._done.set()
        self.join(10)


class Worker:
    """One evaluation worker process (several may share a database and data folder)."""

    def __init__(
        self, settings: Settings, *, db: Database | None = None, mailer: Mailer | None = None
    ) -> None:
        self.settings = settings
        self.db = db or Database(settings.database)
        self.mailer = mailer or Mailer(settings)
        self.identity = worker_identity()
        self.stop_event = threading.Event()
        self.stop_requested_at: float | None = None

    def request_stop(self) -> None:
        """Stop after the current job (or release it when the grace period runs out)."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
        self.stop_event.set()

    def run(self, *, once: bool = False) -> None:
        """Loop until stopped; with `once`, until no job is waiting."""
        log.info("worker %s started", self.identity)
        while not self.stop_event.is_set():
            try:
                worked = self.tick()
            except Exception:
                log.exception("worker loop error; retrying")
                worked = False
            if not worked:
                if once:
                    break
                self.stop_event.wait(self.settings.worker_poll_seconds)
        log.info("worker %s stopped", self.identity)

    def tick(self) -> bool:
        """One round: promote, requeue expired, claim and run one job. True if a job ran."""
        s = self.settings
        todo = jobs.pending(db=self.db)
        if todo.uploaded:
            jobs.promote_uploaded(db=self.db, max_attempts=s.job_max_attempts)
        if todo.expired:
            for submission_id, status in jobs.requeue_expired(db=self.db):
                log.warning("submission %s: lease expired, now %s", submission_id, status)
                if status == SubmissionStatus.FAILED:
                    self.notify(submission_id)
        if self.stop_event.is_set() or not (todo.uploaded or todo.expired or todo.queued):
            return False
        claimed = jobs.claim(db=self.db, owner=self.identity, lease_seconds=s.job_lease_seconds)
        if claimed is None:
            return False
        self.run_job(claimed)
        return True

    # --- one job ---------------------------------------------------------------------------

    def plan(self, submission_id: str) -> JobPlan:
        with self.db.session(read_only=True) as session:
            submission = session.get(Submission, submission_id)
            if submission is None:
                raise LookupError(f"submission {submission_id} vanished")
            benchmark = submission.benchmark
            evaluator = benchmark.evaluator
            paths = session.scalars(
                select(Leaderboard.entry_path).where(
                    Leaderboard.benchmark_id == benchmark.id, Leaderboard.archived.is_(False)
                )
            ).all()
            return JobPlan(
                facts=submission_facts(submission),
                evaluator_kind=evaluator.kind if evaluator else EvaluatorKind.SCORES,
                command=evaluator.command if evaluator else None,
                timeout=float(
                    (evaluator.timeout_seconds if evaluator else None)
                    or self.settings.evaluator_timeout_seconds
                ),
                leaderboard_paths=list(paths),
            )

    def run_job(self, claimed: jobs.Claimed) -> None:
        """Evaluate one claimed job and record the outcome (unless the lease was lost)."""
        s = self.settings
        sid = claimed.submission_id
        started = time.monotonic()
        heartbeat = Heartbeat(self, claimed)
        heartbeat.start()
        log_path = storage.evaluation_log_path(s, sid)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_bytes(b"")
        sink = LogSink(log_path, max_bytes=s.evaluation_log_max_bytes)
        sink.line(f"attempt {claimed.attempt} by worker {self.identity}")
        unpacked = storage.unpacked_dir(s, sid)
        workdir = storage.submission_dir(s, sid) / "work"
        cancelled: Cancelled | None = None
        try:
            outcome = self._evaluate(claimed, heartbeat, sink, unpacked, workdir)
        except Cancelled as exc:
            cancelled = exc
        except Exception as exc:
            log.exception("submission %s: evaluation error", sid)
            outcome = Outcome(
                SubmissionStatus.FAILED, f"internal error during evaluation ({type(exc).__name__})"
            )
            sink.line(outcome.reason)
        sink.close()
        heartbeat.stop()
        self._cleanup(unpacked, workdir)
        if cancelled is not None:
            self._cancelled(claimed, heartbeat, str(cancelled))
            return
        if heartbeat.lost:
            log.warning("submission %s: %s; result discarded", sid, LEASE_LOST)
            return
        if outcome.status == SubmissionStatus.COMPLETED:
            write_results(results_path(s, sid), outcome.entries)
        self._record(claimed, outcome, time.monotonic() - started)

    def _evaluate(
        self,
        claimed: jobs.Claimed,
        heartbeat: Heartbeat,
        sink: LogSink,
        unpacked: Path,
        workdir: Path,
    ) -> Outcome:
        s = self.settings
        plan = self.plan(claimed.submission_id)
        archive = storage.archive_path(s, claimed.submission_id)
        if not archive.is_file():
            return Outcome(SubmissionStatus.FAILED, "the archive is missing on the server")
        try:
            stats = unpack(
                archive,
                unpacked,
                max_bytes=s.max_unpacked_bytes,
                max_files=s.max_unpacked_files,
                should_stop=lambda: heartbeat.reason is not None,
            )
        except UnpackError as exc:
            sink.line(f"archive refused: {exc.reason}")
            return Outcome(SubmissionStatus.INVALID, f"archive refused: {exc.reason}")
        except UnpackInterrupted:
            raise Cancelled(heartbeat.reason or STOPPING) from None
        sink.line(f"unpacked {stats.files} files, {stats.bytes} bytes")
        if plan.evaluator_kind == EvaluatorKind.COMMAND and plan.command:
            return run_command(
                facts=plan.facts,
                command=plan.command,
                unpacked=unpacked,
                workdir=workdir,
                timeout=plan.timeout,
                log=sink,
                cancelled=lambda: heartbeat.reason,
            )
        return run_scores(
            facts=plan.facts,
            unpacked=unpacked,
            leaderboard_paths=plan.leaderboard_paths,
            log=sink,
        )

    def _cleanup(self, *folders: Path) -> None:
        # The archive stays; the unpacked copy would double the disk used by every submission.
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)

    def _cancelled(self, claimed: jobs.Claimed, heartbeat: Heartbeat, reason: str) -> None:
        if heartbeat.lost:
            log.warning("submission %s: %s; stopped without writing", claimed.submission_id, reason)
            return
        released = jobs.release(
            db=self.db, job_id=claimed.job_id, owner=claimed.owner, reason=reason
        )
        log.info("submission %s: released (%s): %s", claimed.submission_id, released, reason)

    def _record(self, claimed: jobs.Claimed, outcome: Outcome, duration: float) -> None:
        with self.db.transaction() as session:
            submission = jobs.finish(
                session=session,
                job_id=claimed.job_id,
                owner=claimed.owner,
                status=outcome.status,
                reason=outcome.reason,
                exit_code=outcome.exit_code,
                duration=duration,
            )
            if submission is None:
                log.warning("submission %s: lease lost before recording", claimed.submission_id)
                return
            if outcome.status == SubmissionStatus.COMPLETED:
                labels = publish(session=session, submission=submission, entries=outcome.entries)
                message = (
                    f"published on leaderboard(s) {', '.join(labels)}"
                    if labels
                    else "not published on any public leaderboard"
                )
                log_event(session=session, submission_id=submission.id, message=message)
            else:
                unpublish(session=session, submission_id=submission.id)
        log.info("submission %s: %s (%s)", claimed.submission_id, outcome.status, outcome.reason)
        self.notify(claimed.submission_id)

    def notify(self, submission_id: str) -> None:
        """E-mail the owner the final status, with a link to the log."""
        with self.db.session(read_only=True) as session:
            submission = session.get(Submission, submission_id)
            if submission is None or submission.status not in jobs.FINAL:
                return
            to, status = submission.user.email, submission.status
            benchmark = submission.benchmark_id
        base = self.settings.base_url.rstrip("/")
        self.mailer.send(
            to=to,
            subject=f"[{self.settings.app_name}] submission {submission_id}: {status}",
            body=(
                f"Your submission {submission_id} to {benchmark} is now {status}.\n\n"
                f"Status history and evaluation log: {base}/submissions/{submission_id}/log\n"
                f"Scores (when completed): {base}/submissions/{submission_id}/scores\n"
            ),
        )

    def close(self) -> None:
        self.mailer.close()
        self.db.dispose()


def run_worker(*, settings: Settings, once: bool = False) -> None:
    """Claim and run evaluation jobs until SIGTERM/SIGINT (or, with `once`, until idle)."""
    worker = Worker(settings)

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current job", signum)
        worker.request_stop()

    previous = {
        sig: signal.signal(sig, _on_signal)
        for sig in (signal.SIGTERM, signal.SIGINT)
        if threading.current_thread() is threading.main_thread()
    }
    try:
        worker.run(once=once)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        worker.close()
