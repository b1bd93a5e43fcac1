"""A worker's heartbeat: its row in `workers` (node, pid, started, last seen, current job).

Written when the worker starts, then every `worker_heartbeat_seconds` from a thread of its own
(a long join or evaluation never delays it), and at once when the current job changes; deleted
on a clean exit. One short write per interval is all an idle worker adds to the database: the
row's age is what "alive" means (health.py). A failed write is logged and retried next time.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading

from sqlalchemy import delete, update

from zerospeech_api.db.cluster import db_now
from zerospeech_api.db.engine import Database, rows_changed
from zerospeech_api.db.tables import WorkerHeartbeat

log = logging.getLogger("zerospeech_api.worker")


class Heartbeat(threading.Thread):
    """Keeps this worker's row fresh until `stop()`, which deletes it."""

    def __init__(
        self, *, db: Database, identity: str, interval: float, node: str | None = None
    ) -> None:
        super().__init__(name="worker-heartbeat", daemon=True)
        self.db = db
        self.identity = identity
        self.interval = interval
        self.node = node or socket.gethostname()
        self.pid = os.getpid()
        self.started_at: dt.datetime | None = None  # the database's time of the first beat
        self._job_id: int | None = None
        self._wake = threading.Event()
        self._done = threading.Event()

    def start(self) -> None:
        """Write the row now (the worker is visible before its first job), then keep it fresh."""
        self.beat()
        super().start()

    def set_job(self, job_id: int | None) -> None:
        """Record the job being evaluated (None when idle); written right away."""
        self._job_id = job_id
        self._wake.set()

    def beat(self) -> None:
        """Write `last_seen_at` and the current job; recreate the row if it was removed."""
        try:
            with self.db.transaction() as session:
                # The database's clock: ages are compared with it on every host (health.py).
                now = db_now(session)
                self.started_at = self.started_at or now
                values = {"last_seen_at": now, "current_job_id": self._job_id}
                updated = rows_changed(
                    session,
                    update(WorkerHeartbeat)
                    .where(WorkerHeartbeat.id == self.identity)
                    .values(**values)
                    .execution_options(synchronize_session=False),
                )
                if not updated:
                    session.add(
                        WorkerHeartbeat(
                            id=self.identity,
                            node=self.node,
                            pid=self.pid,
                            started_at=self.started_at,
                            **values,
                        )
                    )
        except Exception as exc:  # the database is away: alive is decided by the next beat
            log.warning("heartbeat not written: %s", type(exc).__name__)

    def run(self) -> None:
        while not self._done.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if not self._done.is_set():
                self.beat()

    def stop(self) -> None:
        """Stop beating and delete the row (a clean exit is not a dead worker)."""
        self._done.set()
        self._wake.set()
        if self.is_alive():
            self.join(10)
        try:
            with self.db.transaction() as session:
                session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.id == self.identity))
        except Exception as exc:
            log.warning("heartbeat row not removed: %s", type(exc).__name__)
