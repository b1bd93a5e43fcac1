"""The watchdog: every `watchdog_seconds` one process checks the queue's health (health.py),
fixes what is safe to fix and tells the operators about the rest (alerts.py), once per problem.

Election: a process acts only if its conditional update moves the `watchdog_turns` row past one
interval, so one process acts per period whatever the number of workers; it reads the row first,
so a process whose turn it is not takes no write lock. Workers run it with fixes: queue an upload
never queued, re-join a complete upload, re-queue the jobs of dead workers. Server processes run
it only while no worker is alive (a worker cannot report that none is), without fixes: they
alert. A problem a fix takes care of is not alerted; a fix that fails (a join on a full disk) is,
with its reason. Each run also forgets workers silent for a day and alerts resolved a month ago.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from zerospeech_api.alerts import (
    KEEP_RESOLVED,
    Alerter,
    Changes,
    problem_notice,
    reconcile,
    resolved_notice,
)
from zerospeech_api.db.cluster import db_now
from zerospeech_api.db.engine import Database, rows_changed
from zerospeech_api.db.tables import Alert, WatchdogTurn, WorkerHeartbeat
from zerospeech_api.errors import DomainError
from zerospeech_api.evaluation import jobs
from zerospeech_api.evaluation.health import (
    LEASE_EXPIRED,
    NOT_JOINED,
    NOT_QUEUED,
    Problem,
    alive_workers,
    find_problems,
)
from zerospeech_api.mail import Mailer
from zerospeech_api.settings import Settings
from zerospeech_api.submissions.assembly import JoinFailed, join_submission

log = logging.getLogger("zerospeech_api.watchdog")

TURN = "queue-health"
FORGET_DEAD_WORKERS = dt.timedelta(days=1)
# A turn is taken when the last one is at least this share of an interval old: processes that
# wake a little early still act once per period.
TURN_SLACK = 0.9

# A fix returns None when the problem is handled (fixed, or someone else is on it), else why not.
Fix = Callable[[Problem], str | None]


def take_turn(*, db: Database, who: str, interval: float) -> bool:
    """True if this process runs the check for this period (decided by the database)."""
    with db.session(read_only=True) as session:
        now = db_now(session)  # the database's clock: every host's processes take part
        due = now - dt.timedelta(seconds=interval * TURN_SLACK)
        last = session.scalar(select(WatchdogTurn.ran_at).where(WatchdogTurn.name == TURN))
    if last is not None and last > due:
        return False
    with db.transaction() as session:
        won = rows_changed(
            session,
            update(WatchdogTurn)
            .where(WatchdogTurn.name == TURN, WatchdogTurn.ran_at <= due)
            .values(ran_at=now, ran_by=who)
            .execution_options(synchronize_session=False),
        )
        if not won and last is None:
            try:
                with session.begin_nested():
                    session.add(WatchdogTurn(name=TURN, ran_at=now, ran_by=who))
                won = 1
            except IntegrityError:  # another process created it first: its turn
                won = 0
        if won:
            # Housekeeping rides on the one write of the period.
            session.execute(
                delete(WorkerHeartbeat).where(
                    WorkerHeartbeat.last_seen_at < now - FORGET_DEAD_WORKERS
                )
            )
            session.execute(delete(Alert).where(Alert.resolved_at < now - KEEP_RESOLVED))
    return bool(won)


@dataclass(frozen=True)
class Report:
    """What one run found and did."""

    found: list[Problem]
    fixed: list[Problem]
    alerted: Changes


def watch(
    *,
    db: Database,
    settings: Settings,
    alerter: Alerter,
    fixes: Mapping[str, Fix],
) -> Report:
    """Check, fix what `fixes` covers, then open and resolve alerts (no election: the caller
    took its turn)."""
    with db.session(read_only=True) as session:
        found = find_problems(session=session, settings=settings)
    failed: dict[str, Problem] = {}
    fixed: list[Problem] = []
    for problem in found:
        fix = fixes.get(problem.kind)
        if fix is None:
            continue
        try:
            why = fix(problem)
        except Exception as exc:
            log.exception("watchdog: fixing %s failed", problem.key)
            why = f"internal error ({type(exc).__name__})"
        if why is None:
            fixed.append(problem)
        else:
            failed[problem.key] = replace(
                problem, reason=f"{problem.reason}; the watchdog could not fix it: {why}"
            )
    after = found
    if fixed or failed:
        with db.session(read_only=True) as session:
            after = find_problems(session=session, settings=settings)
    # Fixable problems nobody here can fix are left to the workers (or to `no-worker`).
    alertable = [failed.get(p.key, p) for p in after if not p.fixable or p.key in failed]
    changes = reconcile(db=db, alertable=alertable, present={p.key for p in after})
    for item in changes.opened:
        log.warning("ALERT %s: %s (fix: %s)", item.key, item.reason, item.command)
        alerter.send(problem_notice(settings, item))
    for item in changes.resolved:
        log.info("resolved %s: %s", item.key, item.reason)
        alerter.send(resolved_notice(settings, item))
    for problem in fixed:
        log.info("watchdog fixed %s", problem.key)
    return Report(found=found, fixed=fixed, alerted=changes)


def worker_fixes(
    *, db: Database, settings: Settings, requeue_expired: Callable[[], object]
) -> dict[str, Fix]:
    """The fixes a worker applies: queue, join, re-queue (its own `requeue_expired`, which
    also tells the owners of submissions that failed for good)."""

    def queue(problem: Problem) -> str | None:
        assert problem.submission_id is not None
        try:
            with db.transaction() as session:
                jobs.enqueue(
                    session=session,
                    submission_id=problem.submission_id,
                    max_attempts=settings.job_max_attempts,
                    reason="queued by the watchdog: uploaded on an auto-evaluating benchmark "
                    "but never queued",
                )
        except DomainError:
            pass  # queued, cancelled or deleted meanwhile: nothing left to fix
        return None

    def join(problem: Problem) -> str | None:
        assert problem.submission_id is not None
        try:
            join_submission(settings=settings, db=db, submission_id=problem.submission_id)
        except JoinFailed as exc:
            return str(exc)
        return None

    def requeue(_problem: Problem) -> str | None:
        requeue_expired()
        return None

    return {NOT_QUEUED: queue, NOT_JOINED: join, LEASE_EXPIRED: requeue}


class Watchdog(threading.Thread):
    """Runs `watch` every `watchdog_seconds` when the election gives this process the turn."""

    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        alerter: Alerter,
        who: str,
        fixes: Mapping[str, Fix] | None = None,
        standby: bool = False,
        first_delay: float = 0.0,
    ) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.db = db
        self.settings = settings
        self.alerter = alerter
        self.who = who
        self.fixes = dict(fixes or {})
        self.standby = standby  # act only while no worker is alive (server processes)
        self.first_delay = first_delay
        self._done = threading.Event()

    def run_once(self) -> Report | None:
        """One period: the report if this process took the turn, else None."""
        if self.standby:
            with self.db.session(read_only=True) as session:
                if alive_workers(session=session, settings=self.settings):
                    return None
        if not take_turn(db=self.db, who=self.who, interval=self.settings.watchdog_seconds):
            return None
        return watch(db=self.db, settings=self.settings, alerter=self.alerter, fixes=self.fixes)

    def run(self) -> None:
        delay = self.first_delay
        while not self._done.wait(delay):
            try:
                self.run_once()
            except Exception:  # the database is away, say: try again next period
                log.exception("watchdog run failed")
            delay = self.settings.watchdog_seconds

    def stop(self, timeout: float = 10) -> None:
        """Stop after the current run (a join it started is crash-safe if cut short)."""
        self._done.set()
        if self.is_alive():
            self.join(timeout)


class ServerWatchdog:
    """A server process's standby watchdog, with its own alert sender (app lifespan): it acts
    only while no worker is alive, first one interval after start-up."""

    def __init__(self, *, settings: Settings, db: Database, mailer: Mailer) -> None:
        self.settings = settings
        self.db = db
        self.alerter = Alerter(settings, mailer)
        self.thread: Watchdog | None = None

    def start(self) -> None:
        # Named at start: under gunicorn the app may be built before the worker is forked.
        self.thread = Watchdog(
            db=self.db,
            settings=self.settings,
            alerter=self.alerter,
            who=f"server {socket.gethostname()}:{os.getpid()}",
            standby=True,
            first_delay=self.settings.watchdog_seconds,
        )
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()
        self.alerter.close()
