"""Health of the evaluation side: which workers are alive, from their heartbeats.

A worker writes its row in `workers` every `worker_heartbeat_seconds`; one not heard from for
HEARTBEAT_MISSES intervals is dead. The queue command, the watchdog and /metrics all ask here.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from zerospeech_api.db.tables import WorkerHeartbeat, utcnow
from zerospeech_api.settings import Settings

HEARTBEAT_MISSES = 3


def alive_since(settings: Settings, now: dt.datetime | None = None) -> dt.datetime:
    """The oldest `last_seen_at` of a worker still counted alive."""
    missed = dt.timedelta(seconds=settings.worker_heartbeat_seconds * HEARTBEAT_MISSES)
    return (now or utcnow()) - missed


def alive_workers(*, session: Session, settings: Settings) -> list[WorkerHeartbeat]:
    """Workers heard from recently, newest first."""
    return list(
        session.scalars(
            select(WorkerHeartbeat)
            .where(WorkerHeartbeat.last_seen_at >= alive_since(settings))
            .order_by(WorkerHeartbeat.last_seen_at.desc())
        )
    )
