"""A worker's hold on one claimed job: the heartbeat that renews it, and the fence for writes.

The database is the authority: every row a worker writes is conditional on its lease (jobs.py).
The fence adds a local check before every file write: the worker writes only while its lease is
certainly valid by its own clock (start of the last successful renewal + the lease length) and
no renewal was refused. After a pause longer than the lease (SIGSTOP, a frozen VM, a long GC),
the heartbeat renews at once; if another worker took the job, or it was cancelled, the renewal
fails, `reason` is set (the evaluator is stopped) and nothing more is written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from zerospeech_api.db.engine import Database
from zerospeech_api.evaluation import jobs

log = logging.getLogger("zerospeech_api.worker")

LEASE_LOST = "lease lost: another worker may have taken the job, or it was cancelled"
STOPPING = "worker stopping (SIGTERM) before the evaluation finished"


class Lease(threading.Thread):
    """Renews the lease while a job runs; `reason` says when the job must stop."""

    def __init__(
        self,
        *,
        db: Database,
        claimed: jobs.Claimed,
        lease_seconds: int,
        claimed_at: float,
        stopping: Callable[[], bool],
    ) -> None:
        super().__init__(name="lease-heartbeat", daemon=True)
        self.db = db
        self.claimed = claimed
        self.lease_seconds = lease_seconds
        self.stopping = stopping
        # Taken before the claim: the lease in the database cannot end before this.
        self.valid_until = claimed_at + lease_seconds
        self.lost = False
        self.reason: str | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()

    def owned(self) -> bool:
        """True while this worker certainly still holds the job (checked before every write)."""
        return not self.lost and time.monotonic() < self.valid_until

    def renew(self) -> bool:
        """Renew now; False (and `lost`) if the job is no longer this worker's."""
        with self._lock:
            if self.lost:
                return False
            started = time.monotonic()
            if jobs.renew(
                db=self.db,
                job_id=self.claimed.job_id,
                owner=self.claimed.owner,
                lease_seconds=self.lease_seconds,
            ):
                self.valid_until = started + self.lease_seconds
                return True
            self.lost = True
            self.reason = LEASE_LOST
            return False

    def run(self) -> None:
        interval = max(0.5, self.lease_seconds / 3)
        next_renewal = time.monotonic() + interval
        while not self._done.wait(0.1):
            now = time.monotonic()
            if self.reason is None and self.stopping():
                self.reason = STOPPING
            if now < next_renewal:
                continue
            try:
                if not self.renew():
                    return
            except Exception as exc:  # a database hiccup: retry soon; expiry decides
                log.warning("lease renewal failed: %s", type(exc).__name__)
                next_renewal = now + 1
                continue
            next_renewal = time.monotonic() + interval

    def stop(self) -> None:
        self._done.set()
        self.join(10)
