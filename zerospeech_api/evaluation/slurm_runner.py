"""The slurm runner: one worker keeps many Slurm jobs in flight and hands them on when it dies.

The job loop claims a job, unpacks the archive into the attempt's folder on the shared data
folder and submits it with `sbatch` (slurm.py), without waiting; one thread then follows every
Slurm job of the worker: one `squeue` per `slurm_poll_seconds`, lease renewals, the job's
output copied into the attempt's log as it grows, and, when the Slurm job ends, its exit code
and entry file turned into the same `Outcome` the local runner gives, recorded and published by
the worker's one completion path (`Worker.conclude`, reached through `WorkerHooks`).

Nothing is run twice and no Slurm job is forgotten:
- `slurm_active` is set (conditional on the lease) before `sbatch` runs, the Slurm job id is
  recorded in the next transaction that owns the lease, and the flag is cleared only after the
  outcome is recorded, or once the Slurm job is cancelled.
- A claim of a job whose Slurm job is still known adopts it: the new owner follows the same
  Slurm job in the folder of the attempt that submitted it. A recorded Slurm job Slurm no longer
  knows, without an exit code, is cancelled (`scancel`) before the evaluation is submitted
  again; a Slurm job submitted by a worker that died before it could record the id is found by
  its name and comment and cancelled too.
- Every worker sweeps the jobs that ended without their Slurm job (cancelled by a participant or
  an admin, failed after too many attempts) and cancels what is left in Slurm.
On SIGTERM the worker gives its jobs back (not counted as attempts); their Slurm jobs keep
running and the next worker adopts them.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select, update

from zerospeech_api.db.engine import Database, rows_changed
from zerospeech_api.db.tables import (
    Benchmark,
    Evaluator,
    EvaluatorKind,
    EvaluatorRunner,
    Job,
    JobState,
    Submission,
    SubmissionStatus,
)
from zerospeech_api.evaluation import jobs
from zerospeech_api.evaluation.attempt import (
    AttemptFiles,
    JobPlan,
    remove_scratch,
    remove_stale_scratch,
)
from zerospeech_api.evaluation.evaluators import (
    Cancelled,
    LogSink,
    Outcome,
    build_argv,
    command_outcome,
    timed_out_outcome,
)
from zerospeech_api.evaluation.lease import LEASE_LOST, Lease
from zerospeech_api.evaluation.slurm import (
    OUTPUT_FILE,
    SCRIPT_FILE,
    TIMEOUT,
    JobInfo,
    Slurm,
    SlurmError,
    batch_script,
    job_comment,
    job_name,
    read_exit_code,
    time_limit_minutes,
)
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage
from zerospeech_api.submissions.events import log_event


class WorkerHooks(Protocol):
    """What the runner uses of the worker that owns it (worker.py's `Worker`)."""

    settings: Settings
    db: Database
    identity: str

    def plan(self, submission_id: str) -> JobPlan: ...

    def fault(self, submission_id: str, exc: Exception) -> Outcome: ...

    def unpack_into(
        self, claimed: jobs.Claimed, lease: Lease, sink: LogSink, files: AttemptFiles
    ) -> Outcome | None: ...

    def conclude(
        self,
        claimed: jobs.Claimed,
        lease: Lease,
        sink: LogSink | None,
        files: AttemptFiles,
        outcome: Outcome,
        started: float,
    ) -> bool: ...


log = logging.getLogger("zerospeech_api.worker")

NO_SBATCH = "this worker's host ({host}) has no `sbatch`: the slurm runner submits with it"
ENTRY_FILE = "entry.json"
LOG_CHUNK = 65536
# Slurm states in which the batch script ran to its end (so it recorded the exit code), and how
# many polls to wait for that file before believing it is not there.
RAN_TO_END = frozenset({"COMPLETED", "FAILED"})
# An evaluator ended by SIGTERM or SIGKILL, as the batch script records it (128 + signal).
KILLED_CODES = frozenset({128 + signal.SIGTERM, 128 + signal.SIGKILL})
LATE_POLLS = 3


@dataclass
class Followed:
    """One evaluation this worker follows in Slurm."""

    claimed: jobs.Claimed
    lease: Lease
    plan: JobPlan
    files: AttemptFiles  # this attempt: its log and results
    run: AttemptFiles  # where the Slurm job works: this attempt's folder, or an adopted one's
    sink: LogSink
    started: float
    next_renewal: float
    slurm_job_id: str | None = None
    limit_seconds: float = 0.0
    log_offset: int = 0
    late_polls: int = 0  # polls since Slurm said it ended without an exit code to read


# --- the job row's Slurm columns --------------------------------------------------------


@dataclass(frozen=True)
class SlurmRecord:
    """What the job row says about its Slurm job."""

    slurm_job_id: str | None
    claim: int | None
    active: bool


def slurm_record(*, db: Database, job_id: int) -> SlurmRecord:
    """The job's recorded Slurm job."""
    with db.session(read_only=True) as session:
        row = session.execute(
            select(Job.slurm_job_id, Job.slurm_claim, Job.slurm_active).where(Job.id == job_id)
        ).one()
    return SlurmRecord(row.slurm_job_id, row.slurm_claim, bool(row.slurm_active))


def _record_owned(db: Database, claimed: jobs.Claimed, message: str, **values: object) -> bool:
    """Set the job's Slurm columns and log `message`, only while this worker owns the job."""
    with db.transaction() as session:
        if not jobs.update_owned(
            session=session, job_id=claimed.job_id, owner=claimed.owner, **values
        ):
            return False
        log_event(session=session, submission_id=claimed.submission_id, message=message)
        return True


def clear_active(*, db: Database, job_id: int, slurm_job_id: str | None) -> bool:
    """The Slurm job ended or was cancelled: nobody needs to look for it any more. True if
    this call cleared it (concurrent sweepers: one wins)."""
    with db.transaction() as session:
        return (
            rows_changed(
                session,
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.slurm_active.is_(True),
                    Job.slurm_job_id.is_(None)
                    if slurm_job_id is None
                    else Job.slurm_job_id == slurm_job_id,
                )
                .values(slurm_active=False)
                .execution_options(synchronize_session=False),
            )
            == 1
        )


@dataclass(frozen=True)
class Leftover:
    """A job that ended (or was cancelled) while its Slurm job may still exist."""

    job_id: int
    submission_id: str
    state: str
    slurm_job_id: str | None
    claim: int | None


def leftovers(*, db: Database, limit: int = 100) -> list[Leftover]:
    """Jobs no worker follows any more whose Slurm job was never seen to end."""
    with db.session(read_only=True) as session:
        rows = session.execute(
            select(Job.id, Job.submission_id, Job.state, Job.slurm_job_id, Job.slurm_claim)
            .where(
                Job.slurm_active.is_(True),
                Job.state.not_in([JobState.QUEUED, JobState.RUNNING]),
            )
            .order_by(Job.id)
            .limit(limit)
        ).all()
    return [Leftover(*row) for row in rows]


def evaluator_runner(*, db: Database, submission_id: str) -> str:
    """The runner of the evaluator of the submission's benchmark (`local` without one)."""
    with db.session(read_only=True) as session:
        runner = session.scalar(
            select(Evaluator.runner)
            .join(Benchmark, Benchmark.evaluator_id == Evaluator.id)
            .join(Submission, Submission.benchmark_id == Benchmark.id)
            .where(Submission.id == submission_id, Evaluator.kind == EvaluatorKind.COMMAND)
        )
    return runner or EvaluatorRunner.LOCAL


# --- the runner -------------------------------------------------------------------------


class SlurmRunner:
    """Submits a worker's Slurm evaluations and follows them from one thread."""

    def __init__(self, worker: WorkerHooks, *, slurm: Slurm | None = None) -> None:
        self.worker = worker
        self.settings = worker.settings
        self.db = worker.db
        self.slurm = slurm or Slurm()
        self._followed: dict[int, Followed] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        # Sweep only where Slurm's client is installed (a worker without it submits nothing).
        self.sweeps = shutil.which("scancel") is not None

    # --- the job loop's side (main thread) ----------------------------------------------

    def in_flight(self) -> int:
        """How many evaluations this worker follows in Slurm."""
        with self._lock:
            return len(self._followed)

    def full(self) -> bool:
        """True while the worker follows `slurm_max_in_flight` jobs: claim nothing more."""
        return self.in_flight() >= self.settings.slurm_max_in_flight

    def takes(self, claimed: jobs.Claimed) -> bool:
        """True if the claimed job's evaluator runs on Slurm."""
        runner = evaluator_runner(db=self.db, submission_id=claimed.submission_id)
        return runner == EvaluatorRunner.SLURM

    def start_thread(self) -> None:
        """Start following (idempotent); workers with Slurm's client also sweep from it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="slurm-follow", daemon=True)
            self._thread.start()

    def start(self, claimed: jobs.Claimed, *, claimed_at: float) -> None:
        """Adopt the job's Slurm job, or unpack and submit it; returns without waiting."""
        s, sid = self.settings, claimed.submission_id
        lease = Lease(
            db=self.db,
            claimed=claimed,
            lease_seconds=s.job_lease_seconds,
            claimed_at=claimed_at,
            stopping=lambda: False,  # a stopping worker hands its Slurm jobs on (stop())
        )
        if not lease.owned():
            log.warning("submission %s: %s before the attempt started", sid, LEASE_LOST)
            return
        files = AttemptFiles.of(s, claimed)
        files.root.mkdir(parents=True, exist_ok=True)
        sink = LogSink(files.log, max_bytes=s.evaluation_log_max_bytes, guard=lease.owned)
        sink.line(f"attempt {claimed.attempt} by worker {self.worker.identity}")
        started = time.monotonic()
        try:
            plan = self.worker.plan(sid)
        except Exception as exc:
            outcome = self.worker.fault(sid, exc)
            sink.line(outcome.reason)
            self.worker.conclude(claimed, lease, sink, files, outcome, started)
            return
        followed = Followed(
            claimed=claimed,
            lease=lease,
            plan=plan,
            files=files,
            run=files,
            sink=sink,
            started=started,
            next_renewal=claimed_at + s.job_lease_seconds / 3,
        )
        with self._lock:
            self._followed[claimed.job_id] = followed
        self.start_thread()  # renews the lease while the archive is unpacked
        ended: Outcome | None
        try:
            ended = self._launch(followed)
        except Cancelled as exc:
            self._drop(followed, str(exc))
            return
        except SlurmError as exc:  # Slurm did not answer: the sweep cancels what it may hold
            ended = Outcome(SubmissionStatus.FAILED, f"Slurm did not answer: {exc}")
            sink.line(ended.reason)
        except Exception as exc:
            ended = self.worker.fault(sid, exc)
            sink.line(ended.reason)
        if ended is not None:
            self._finish(followed, ended)

    def _launch(self, f: Followed) -> Outcome | None:
        """Adopt or submit; an `Outcome` if the evaluation ended before reaching Slurm."""
        claimed, plan = f.claimed, f.plan
        f.limit_seconds = 60.0 * time_limit_minutes(plan.timeout)
        record = slurm_record(db=self.db, job_id=claimed.job_id)
        if record.active and self._adopt(f, record):
            return None
        if shutil.which("sbatch") is None:
            reason = NO_SBATCH.format(host=socket.gethostname())
            f.sink.line(reason)
            return Outcome(SubmissionStatus.FAILED, reason)
        self._cancel_leftovers(claimed.submission_id, claimed.job_id)
        marked = _record_owned(
            self.db,
            claimed,
            f"submitting to Slurm (worker {self.worker.identity})",
            slurm_active=True,
            slurm_job_id=None,
            slurm_claim=claimed.claim,
        )
        if not marked:
            raise Cancelled(LEASE_LOST)
        remove_stale_scratch(self.settings, claimed.submission_id, keep=f.files.root)
        unpacked = self.worker.unpack_into(claimed, f.lease, f.sink, f.files)
        if unpacked is not None:
            return unpacked
        return self._submit(f)

    def _submit(self, f: Followed) -> Outcome | None:
        claimed, plan, files = f.claimed, f.plan, f.files
        files.work.mkdir(parents=True, exist_ok=True)
        argv = build_argv(
            plan.command or "", input_dir=files.unpacked, output_file=files.work / ENTRY_FILE
        )
        script = files.root / SCRIPT_FILE
        env = {
            "SUBMISSION_ID": plan.facts.submission_id,
            "BENCHMARK_ID": plan.facts.benchmark_id,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        }
        script.write_text(
            batch_script(argv=argv, workdir=files.unpacked, run_dir=files.root, env=env)
        )
        minutes = time_limit_minutes(plan.timeout)
        if not f.lease.owned():
            raise Cancelled(f.lease.reason or LEASE_LOST)
        try:
            slurm_job_id = self.slurm.submit(
                script=script,
                name=job_name(claimed.submission_id),
                comment=job_comment(claimed.job_id, claimed.claim),
                output=files.root / OUTPUT_FILE,
                workdir=files.unpacked,
                minutes=minutes,
                extra=plan.sbatch_args,
            )
        except SlurmError as exc:
            reason = f"Slurm refused the evaluation: {exc}"
            f.sink.line(reason)
            return Outcome(SubmissionStatus.FAILED, reason)
        recorded = _record_owned(
            self.db,
            claimed,
            f"submitted to Slurm as job {slurm_job_id}",
            slurm_job_id=slurm_job_id,
        )
        if not recorded:  # cancelled meanwhile: the job must not run unfollowed
            self.slurm.cancel(slurm_job_id)
            clear_active(db=self.db, job_id=claimed.job_id, slurm_job_id=None)
            raise Cancelled(LEASE_LOST)
        f.slurm_job_id = slurm_job_id
        with self._lock:
            count = len(self._followed)
        f.sink.line(
            f"submitted Slurm job {slurm_job_id} ({job_name(claimed.submission_id)}, time limit "
            f"{minutes} min): {shlex.join(argv)}"
        )
        log.info(
            "submission %s: Slurm job %s submitted (%d in flight)",
            claimed.submission_id,
            slurm_job_id,
            count,
        )
        return None

    def _adopt(self, f: Followed, record: SlurmRecord) -> bool:
        """Follow the Slurm job an earlier attempt submitted, if it can still tell its end."""
        if record.slurm_job_id is None or record.claim is None:
            return False  # died before sbatch answered: _cancel_leftovers finds it by name
        sid, slurm_job_id = f.claimed.submission_id, record.slurm_job_id
        run = AttemptFiles(storage.attempt_dir(self.settings, sid, f.claimed.job_id, record.claim))
        info = self.slurm.queue([slurm_job_id]).get(slurm_job_id)
        if info is None and read_exit_code(run.root) is None:
            f.sink.line(
                f"Slurm job {slurm_job_id} of an earlier attempt is gone without a result: "
                "cancelled, and the evaluation is submitted again"
            )
            self.slurm.cancel(slurm_job_id)
            return False
        state = info.state if info else "ended"
        adopted = _record_owned(
            self.db,
            f.claimed,
            f"worker {self.worker.identity} adopted Slurm job {slurm_job_id} ({state}); "
            "not submitted again",
            slurm_active=True,  # unchanged: the update is the ownership check
        )
        if not adopted:
            raise Cancelled(LEASE_LOST)
        f.run, f.slurm_job_id = run, slurm_job_id
        remove_stale_scratch(self.settings, sid, keep=run.root)  # the adopted job's stays
        f.sink.line(f"adopted Slurm job {slurm_job_id} ({state}) of an earlier attempt")
        log.info("submission %s: adopted Slurm job %s (%s)", sid, slurm_job_id, state)
        return True

    def _cancel_leftovers(self, submission_id: str, job_id: int) -> None:
        """Cancel Slurm jobs of this job row nobody recorded (a worker died right after sbatch)."""
        prefix = job_comment(job_id, 0).rsplit(":", 1)[0] + ":"
        for info in self.slurm.named(job_name(submission_id)):
            if info.comment.startswith(prefix) and not info.ended:
                log.warning(
                    "submission %s: cancelling unrecorded Slurm job %s", submission_id, info.job_id
                )
                self.slurm.cancel(info.job_id)

    # --- the following thread -----------------------------------------------------------

    def _loop(self) -> None:
        while not self._done.wait(self.settings.slurm_poll_seconds):
            try:
                self.poll()
            except Exception:
                log.exception("Slurm follow-up error; retrying")

    def poll(self) -> None:
        """One round: renew or drop leases, ask Slurm once, collect what ended, sweep."""
        with self._lock:
            followed = list(self._followed.values())
        owned = self._owned(followed)
        followed = [f for f in followed if self._still_owned(f, f.claimed.job_id in owned)]
        submitted = [f for f in followed if f.slurm_job_id is not None]
        if submitted:
            infos = self.slurm.queue(f.slurm_job_id for f in submitted if f.slurm_job_id)
            for f in submitted:
                info = infos.get(f.slurm_job_id or "")
                self._copy_output(f)
                if info is None or info.ended:
                    self._collect(f, info)
        if self.sweeps:
            self.sweep()

    def _still_owned(self, f: Followed, row_owned: bool) -> bool:
        """Renew the lease when due, or at once if the job was cancelled; drop it if lost."""
        now = time.monotonic()
        if now >= f.next_renewal or not row_owned:
            try:
                if f.lease.renew():
                    f.next_renewal = now + self.settings.job_lease_seconds / 3
            except Exception as exc:  # the database is unreachable: the lease will decide
                log.warning("lease renewal failed: %s", type(exc).__name__)
        if f.lease.lost:
            if f.slurm_job_id is not None:  # a job still preparing is dropped by start()
                self._drop(f, f.lease.reason or LEASE_LOST)
            return False
        return True

    def _owned(self, followed: list[Followed]) -> set[int]:
        """Ids of the followed jobs the database still gives this worker (one read): a job
        cancelled meanwhile is renewed at once, which fails, so it is dropped in this round."""
        if not followed:
            return set()
        owners = {f.claimed.job_id: f.claimed.owner for f in followed}
        with self.db.session(read_only=True) as session:
            rows = session.execute(
                select(Job.id, Job.lease_owner).where(
                    Job.id.in_(owners), Job.state == JobState.RUNNING
                )
            ).all()
        return {row.id for row in rows if row.lease_owner == owners[row.id]}

    def _copy_output(self, f: Followed) -> None:
        """Append what the Slurm job wrote since the last look to the attempt's log."""
        try:
            with open(f.run.root / OUTPUT_FILE, "rb") as handle:
                handle.seek(f.log_offset)
                while chunk := handle.read(LOG_CHUNK):
                    f.sink.write(chunk)
                    f.log_offset += len(chunk)
        except FileNotFoundError:
            pass  # not started yet

    def _collect(self, f: Followed, info: JobInfo | None) -> None:
        """The Slurm job ended: its outcome, recorded and published as the local runner's."""
        slurm_job_id = f.slurm_job_id or ""
        code = read_exit_code(f.run.root)
        if code is None and info is not None and info.state in RAN_TO_END:
            # The batch script wrote its exit code before the job ended: a shared filesystem
            # may show it a little later than Slurm shows the end.
            f.late_polls += 1
            if f.late_polls <= LATE_POLLS:
                return
        self._copy_output(f)
        if code is None or code in KILLED_CODES:
            # scontrol: the exit code and reason, and whether Slurm's time limit ended it (its
            # SIGTERM may reach the evaluator before the KILL, and the script record 143).
            info = self.slurm.show(slurm_job_id) or info
        state = info.state if info else "ended"
        f.sink.line(f"Slurm job {slurm_job_id} {state}")
        output = f.run.work / ENTRY_FILE
        if info is not None and info.state == TIMEOUT:
            timeout_code = code if code is not None else info.exit_code
            outcome = timed_out_outcome(f.limit_seconds, exit_code=timeout_code, log=f.sink)
        elif code is not None:
            outcome = command_outcome(code=code, output=output, facts=f.plan.facts, log=f.sink)
        else:
            why = f"{info.state} ({info.reason})" if info else "and Slurm forgot it"
            reason = f"Slurm job {slurm_job_id} ended {why} before the evaluator finished"
            f.sink.line(reason)
            outcome = Outcome(
                SubmissionStatus.FAILED, reason, exit_code=info.exit_code if info else None
            )
        self._finish(f, outcome)

    def _finish(self, f: Followed, outcome: Outcome) -> None:
        with self._lock:
            self._followed.pop(f.claimed.job_id, None)
        recorded = self.worker.conclude(f.claimed, f.lease, f.sink, f.files, outcome, f.started)
        if not recorded:
            return  # someone else owns it now, and may be following the same Slurm job
        # Only after the outcome is recorded: a worker dying in between leaves a finished job
        # whose Slurm job the sweep cancels (a no-op), never a running one nobody follows.
        clear_active(db=self.db, job_id=f.claimed.job_id, slurm_job_id=f.slurm_job_id)
        for folder in {f.run.root, f.files.root}:
            remove_scratch(folder)
            (folder / OUTPUT_FILE).unlink(missing_ok=True)  # copied into the log

    def _drop(self, f: Followed, reason: str) -> None:
        """Stop following without writing anything (the lease is gone)."""
        with self._lock:
            self._followed.pop(f.claimed.job_id, None)
        f.sink.close()
        log.warning("submission %s: %s; stopped following it", f.claimed.submission_id, reason)

    def sweep(self) -> None:
        """Cancel the Slurm jobs of jobs that ended without them (cancelled, given up)."""
        for left in leftovers(db=self.db):
            if left.slurm_job_id is not None:
                self.slurm.cancel(left.slurm_job_id)
            else:
                self._cancel_leftovers(left.submission_id, left.job_id)
            if not clear_active(db=self.db, job_id=left.job_id, slurm_job_id=left.slurm_job_id):
                continue
            if left.claim is not None:
                attempt = storage.attempt_dir(
                    self.settings, left.submission_id, left.job_id, left.claim
                )
                remove_scratch(attempt)
            what = f"Slurm job {left.slurm_job_id}" if left.slurm_job_id else "its Slurm job"
            log.info(
                "submission %s: %s cancelled (the evaluation is %s)",
                left.submission_id,
                what,
                left.state,
            )
            with self.db.transaction() as session:
                log_event(
                    session=session,
                    submission_id=left.submission_id,
                    message=f"{what} cancelled (scancel): the evaluation is {left.state}",
                )

    def stop(self) -> None:
        """Stop following and give every followed job back; their Slurm jobs keep running
        and the next worker adopts them."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(30)
        with self._lock:
            followed, self._followed = list(self._followed.values()), {}
        for f in followed:
            reason = (
                f"worker stopping; Slurm job {f.slurm_job_id} keeps running and the next "
                "worker adopts it"
            )
            f.sink.line(reason)
            f.sink.close()
            released = jobs.release(
                db=self.db, job_id=f.claimed.job_id, owner=f.claimed.owner, reason=reason
            )
            log.info("submission %s: released (%s): %s", f.claimed.submission_id, released, reason)
