"""The evaluation worker: promote, requeue expired, claim, unpack, evaluate, publish, notify.

No database transaction is held during slow work: each step is its own short transaction, and
every row is written only while this worker still owns the job's lease (jobs.py). Files are
per attempt (attempt.py) and every file write passes the lease's fence (lease.py); the results
are published by a rename inside the transaction that checks ownership, so a worker that stalled
past its lease and wakes up writes nothing, neither a row nor a file the new attempt uses. If
renewal fails the evaluation is stopped. SIGTERM lets the current job finish within
`worker_stop_grace_seconds`, then releases it and exits. A full disk fails the job as a platform
fault, with the reason; the archive and the published results are untouched.

Beside the job loop, a worker keeps its heartbeat row fresh (heartbeat.py) and runs the queue
watchdog when its turn comes (watchdog.py). A job that ends `failed` (the platform's fault; a
participant's fault is `invalid`) is also reported to the operators (alerts.py), from the alert
thread, so the job loop never waits for a mail server or a webhook.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from types import FrameType

from sqlalchemy import select

from zerospeech_api.alerts import Alerter, Item, problem_notice
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import (
    EvaluatorKind,
    EvaluatorRunner,
    Job,
    Leaderboard,
    Submission,
    SubmissionStatus,
)
from zerospeech_api.evaluation import jobs
from zerospeech_api.evaluation.attempt import AttemptFiles, JobPlan, remove_stale_scratch
from zerospeech_api.evaluation.evaluators import (
    Cancelled,
    LogSink,
    Outcome,
    run_command,
    run_scores,
)
from zerospeech_api.evaluation.heartbeat import Heartbeat
from zerospeech_api.evaluation.lease import LEASE_LOST, Lease
from zerospeech_api.evaluation.slurm import parse_sbatch_args
from zerospeech_api.evaluation.slurm_runner import SlurmRunner
from zerospeech_api.evaluation.watchdog import Watchdog, worker_fixes
from zerospeech_api.files import fsync_dir
from zerospeech_api.leaderboards.results import (
    results_path,
    submission_facts,
    write_results,
)
from zerospeech_api.leaderboards.service import publish, unpublish
from zerospeech_api.mail import Mailer
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage
from zerospeech_api.submissions.archive import (
    NoSpace,
    UnpackError,
    UnpackInterrupted,
    is_space_error,
    unpack,
)
from zerospeech_api.submissions.events import log_event

log = logging.getLogger("zerospeech_api.worker")

PLATFORM_FAULT = (
    "{detail}: a fault of the server, not of the submission; an admin can run it again "
    "(`zerospeech-api submissions evaluate ID`) once there is room"
)
DISK_FULL = "the server's disk filled up during the evaluation"
PLATFORM_FAILURE = "platform-failure"


def worker_identity(node: str | None = None) -> str:
    """node:pid:random (the node name, else the host name), unique across hosts and restarts."""
    return f"{node or socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    """One evaluation worker process (several may share a database and data folder)."""

    def __init__(
        self, settings: Settings, *, db: Database | None = None, mailer: Mailer | None = None
    ) -> None:
        self.settings = settings
        self.db = db or Database(settings.database)
        self.mailer = mailer or Mailer(settings)
        self.alerter = Alerter(settings, self.mailer)
        self.identity = worker_identity(settings.node)
        self.stop_event = threading.Event()
        self.stop_requested_at: float | None = None
        self.heartbeat: Heartbeat | None = None
        self.slurm = SlurmRunner(self)

    def request_stop(self) -> None:
        """Stop after the current job (or release it when the grace period runs out)."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
        self.stop_event.set()

    def run(self, *, once: bool = False) -> None:
        """Loop until stopped; with `once`, until no job is waiting (and without the watchdog)."""
        log.info("worker %s started", self.identity)
        self.heartbeat = Heartbeat(
            db=self.db,
            identity=self.identity,
            interval=self.settings.worker_heartbeat_seconds,
            node=self.settings.node,
        )
        self.heartbeat.start()
        watchdog = None if once else self._watchdog()
        if self.slurm.sweeps and not once:
            self.slurm.start_thread()
        try:
            while not self.stop_event.is_set():
                try:
                    worked = self.tick()
                except Exception:
                    log.exception("worker loop error; retrying")
                    worked = False
                if not worked:
                    if once and not self.slurm.in_flight():
                        break
                    self.stop_event.wait(self.settings.worker_poll_seconds)
        finally:
            self.slurm.stop()  # hands its Slurm jobs on to the next worker
            if watchdog is not None:
                watchdog.stop()
            self.heartbeat.stop()
        log.info("worker %s stopped", self.identity)

    def _watchdog(self) -> Watchdog:
        fixes = worker_fixes(
            db=self.db, settings=self.settings, requeue_expired=self.requeue_expired
        )
        watchdog = Watchdog(
            db=self.db, settings=self.settings, alerter=self.alerter, who=self.identity, fixes=fixes
        )
        watchdog.start()
        return watchdog

    def tick(self) -> bool:
        """One round: promote, requeue expired, claim and run one job. True if a job ran."""
        s = self.settings
        todo = jobs.pending(db=self.db)
        if todo.uploaded:
            jobs.promote_uploaded(db=self.db, max_attempts=s.job_max_attempts)
        if todo.expired:
            self.requeue_expired()
        if self.stop_event.is_set() or not (todo.uploaded or todo.expired or todo.queued):
            return False
        if self.slurm.full():  # it cannot tell a Slurm job from a local one before claiming
            return False
        claimed_at = time.monotonic()
        claimed = jobs.claim(db=self.db, owner=self.identity, lease_seconds=s.job_lease_seconds)
        if claimed is None:
            return False
        if self.slurm.takes(claimed):
            self.slurm.start(claimed, claimed_at=claimed_at)
        else:
            self.run_job(claimed, claimed_at=claimed_at)
        return True

    def requeue_expired(self) -> None:
        """Re-queue the jobs of dead workers; a job out of attempts fails: its owner is told,
        and so are the operators (workers dying on a job is the platform's trouble)."""
        for submission_id, status in jobs.requeue_expired(db=self.db):
            log.warning("submission %s: lease expired, now %s", submission_id, status)
            if status == SubmissionStatus.FAILED:
                # Nobody owns the job any more: the dead workers' unpacked copies can go.
                remove_stale_scratch(self.settings, submission_id, keep=None)
                self.notify(submission_id)
                with self.db.session(read_only=True) as session:
                    job = session.scalar(
                        select(Job)
                        .where(Job.submission_id == submission_id)
                        .order_by(Job.id.desc())
                        .limit(1)
                    )
                if job is not None:
                    reason = job.last_error or jobs.LEASE_EXPIRED
                    self.report_failure(submission_id, reason, attempt=f"{job.id}-{job.claims}")

    def report_failure(self, submission_id: str, reason: str, *, attempt: str) -> None:
        """Tell the operators, once per attempt (`job-claim`), that an evaluation failed
        through the platform's fault."""
        item = Item(
            key=f"{PLATFORM_FAILURE}:{submission_id}:{attempt}",
            kind=PLATFORM_FAILURE,
            reason=f"the evaluation of submission {submission_id} failed (a fault of the "
            f"platform, not of the submission): {reason}",
            command=f"read `zerospeech-api submissions show {submission_id}` and the log in "
            f"<data>/submissions/{submission_id}/attempts/, fix the cause, then "
            f"`zerospeech-api submissions evaluate {submission_id}`",
        )
        self.alerter.event(db=self.db, item=item, notice=problem_notice(self.settings, item))

    def grace_over(self) -> bool:
        """True once a requested stop has waited `worker_stop_grace_seconds`."""
        stop_at = self.stop_requested_at
        return (
            stop_at is not None
            and time.monotonic() - stop_at >= self.settings.worker_stop_grace_seconds
        )

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
                runner=evaluator.runner if evaluator else EvaluatorRunner.LOCAL,
                sbatch_args=parse_sbatch_args(evaluator.sbatch_args if evaluator else ""),
            )

    def run_job(self, claimed: jobs.Claimed, *, claimed_at: float | None = None) -> None:
        """Evaluate one claimed job and record the outcome (unless the lease was lost)."""
        lease = Lease(
            db=self.db,
            claimed=claimed,
            lease_seconds=self.settings.job_lease_seconds,
            claimed_at=time.monotonic() if claimed_at is None else claimed_at,
            stopping=self.grace_over,
        )
        lease.start()
        if self.heartbeat is not None:
            self.heartbeat.set_job(claimed.job_id)
        files = AttemptFiles.of(self.settings, claimed)
        try:
            self._attempt(claimed, lease, files)
        finally:
            lease.stop()
            files.remove_scratch()  # this attempt's own folder: never another attempt's
            if self.heartbeat is not None:
                self.heartbeat.set_job(None)

    def _attempt(self, claimed: jobs.Claimed, lease: Lease, files: AttemptFiles) -> None:
        s, sid = self.settings, claimed.submission_id
        started = time.monotonic()
        if not lease.owned():
            log.warning("submission %s: %s before the attempt started", sid, LEASE_LOST)
            return
        # Whatever a dead or stalled worker unpacked for this submission: the owner removes it.
        remove_stale_scratch(s, sid, keep=files.root)
        sink: LogSink | None = None
        try:
            files.root.mkdir(parents=True, exist_ok=True)
            sink = LogSink(files.log, max_bytes=s.evaluation_log_max_bytes, guard=lease.owned)
            sink.line(f"attempt {claimed.attempt} by worker {self.identity}")
            outcome = self._evaluate(claimed, lease, sink, files)
        except Cancelled as exc:
            if sink is not None:
                sink.close()
            self._cancelled(claimed, lease, str(exc))
            return
        except Exception as exc:
            outcome = self.fault(sid, exc)
            if sink is not None:
                sink.line(outcome.reason)
        self.conclude(claimed, lease, sink, files, outcome, started)

    def conclude(
        self,
        claimed: jobs.Claimed,
        lease: Lease,
        sink: LogSink | None,
        files: AttemptFiles,
        outcome: Outcome,
        started: float,
    ) -> bool:
        """Close the log, confirm the lease, write the results, record and publish: the one
        path of every runner's outcome. False if the lease was lost (nothing written)."""
        sid = claimed.submission_id
        if sink is not None:
            sink.close()
            if sink.error is not None and is_space_error(sink.error):
                outcome = Outcome(SubmissionStatus.FAILED, PLATFORM_FAULT.format(detail=DISK_FULL))
        # Confirm the lease now: after a pause it may have gone, and nothing must be written then.
        if not self._confirm(lease):
            log.warning("submission %s: %s; result discarded", sid, LEASE_LOST)
            return False
        if outcome.status == SubmissionStatus.COMPLETED:
            try:
                write_results(files.results, outcome.entries)
            except OSError as exc:
                outcome = self.fault(sid, exc)
        return self._record(claimed, outcome, time.monotonic() - started, files)

    def fault(self, submission_id: str, exc: Exception) -> Outcome:
        """The outcome of an unexpected error: a full disk is named, anything else logged."""
        if is_space_error(exc):
            log.error("submission %s: disk full: %s", submission_id, exc)
            return Outcome(SubmissionStatus.FAILED, PLATFORM_FAULT.format(detail=DISK_FULL))
        log.exception("submission %s: evaluation error", submission_id)
        return Outcome(
            SubmissionStatus.FAILED, f"internal error during evaluation ({type(exc).__name__})"
        )

    def _confirm(self, lease: Lease) -> bool:
        try:
            return lease.renew()
        except Exception as exc:  # the database is unreachable: the lease will decide
            log.warning("lease renewal failed: %s", type(exc).__name__)
            return False

    def _evaluate(
        self, claimed: jobs.Claimed, lease: Lease, sink: LogSink, files: AttemptFiles
    ) -> Outcome:
        plan = self.plan(claimed.submission_id)
        refused = self.unpack_into(claimed, lease, sink, files)
        if refused is not None:
            return refused
        if plan.evaluator_kind == EvaluatorKind.COMMAND and plan.command:
            return run_command(
                facts=plan.facts,
                command=plan.command,
                unpacked=files.unpacked,
                workdir=files.work,
                timeout=plan.timeout,
                log=sink,
                cancelled=lambda: lease.reason,
            )
        return run_scores(
            facts=plan.facts,
            unpacked=files.unpacked,
            leaderboard_paths=plan.leaderboard_paths,
            log=sink,
        )

    def unpack_into(
        self, claimed: jobs.Claimed, lease: Lease, sink: LogSink, files: AttemptFiles
    ) -> Outcome | None:
        """Unpack the archive into the attempt's folder; the outcome if that ends the job."""
        s = self.settings
        archive = storage.archive_path(s, claimed.submission_id)
        if not archive.is_file():
            return Outcome(SubmissionStatus.FAILED, "the archive is missing on the server")
        try:
            stats = unpack(
                archive,
                files.unpacked,
                max_bytes=s.max_unpacked_bytes,
                max_files=s.max_unpacked_files,
                room=storage.free_bytes(s) - s.unpack_reserve_bytes,
                should_stop=lambda: lease.reason is not None or not lease.owned(),
            )
        except UnpackError as exc:
            sink.line(f"archive refused: {exc.reason}")
            return Outcome(SubmissionStatus.INVALID, f"archive refused: {exc.reason}")
        except NoSpace as exc:
            detail = f"{exc.reason} (ZR_UNPACK_RESERVE_BYTES={s.unpack_reserve_bytes} kept free)"
            sink.line(PLATFORM_FAULT.format(detail=detail))
            return Outcome(SubmissionStatus.FAILED, PLATFORM_FAULT.format(detail=detail))
        except UnpackInterrupted:
            raise Cancelled(lease.reason or LEASE_LOST) from None
        sink.line(f"unpacked {stats.files} files, {stats.bytes} bytes")
        return None

    def _cancelled(self, claimed: jobs.Claimed, lease: Lease, reason: str) -> None:
        if lease.lost:
            log.warning("submission %s: %s; stopped without writing", claimed.submission_id, reason)
            return
        released = jobs.release(
            db=self.db, job_id=claimed.job_id, owner=claimed.owner, reason=reason
        )
        log.info("submission %s: released (%s): %s", claimed.submission_id, released, reason)

    def _record(
        self, claimed: jobs.Claimed, outcome: Outcome, duration: float, files: AttemptFiles
    ) -> bool:
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
                return False
            if outcome.status == SubmissionStatus.COMPLETED:
                labels = publish(session=session, submission=submission, entries=outcome.entries)
                message = (
                    f"published on leaderboard(s) {', '.join(labels)}"
                    if labels
                    else "not published on any public leaderboard"
                )
                log_event(session=session, submission_id=submission.id, message=message)
                # Last step before the commit, while the ownership update holds the job row (the
                # whole database on SQLite): no other attempt can finish or be claimed meanwhile,
                # and if the rename fails the publication is rolled back.
                published = results_path(self.settings, claimed.submission_id)
                os.replace(files.results, published)
                fsync_dir(published.parent)
            else:
                unpublish(session=session, submission_id=submission.id)
        log.info("submission %s: %s (%s)", claimed.submission_id, outcome.status, outcome.reason)
        self.notify(claimed.submission_id)
        if outcome.status == SubmissionStatus.FAILED:
            attempt = f"{claimed.job_id}-{claimed.claim}"
            self.report_failure(claimed.submission_id, outcome.reason, attempt=attempt)
        return True

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
        self.alerter.close()  # first: it may still hand mails to the mailer
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
