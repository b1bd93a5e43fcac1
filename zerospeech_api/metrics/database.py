"""The evaluation side, read from the database at scrape time: a few aggregate queries.

Submissions by status (an indexed GROUP BY), the queued jobs (count and oldest, indexed by
state), the workers heard from recently (evaluation.health, the one rule for "alive") and the
durations of finished evaluations as a histogram (one pass over the jobs table). The figures are
the same whichever gunicorn worker answers the scrape.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from zerospeech_api.db.cluster import db_now
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Job, JobState, Submission, SubmissionStatus
from zerospeech_api.evaluation.health import alive_workers
from zerospeech_api.settings import Settings

log = logging.getLogger("zerospeech_api.metrics")

# Seconds; an evaluation runs from seconds (scores) to hours (command evaluators).
EVALUATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200)


@dataclass(frozen=True)
class EvaluationFigures:
    """What /metrics says about submissions, the queue and the workers."""

    submissions: dict[str, int]
    queue_depth: int
    oldest_queued_seconds: float
    workers_alive: int
    duration_count: int
    duration_sum: float
    duration_buckets: tuple[int, ...]  # cumulative, one per EVALUATION_BUCKETS bound


def read_figures(
    *, session: Session, settings: Settings, now: dt.datetime | None = None
) -> EvaluationFigures:
    """Read the figures in four aggregate queries (and the few alive workers)."""
    now = now or db_now(session)
    by_status = {status.value: 0 for status in SubmissionStatus}
    for status, count in session.execute(
        select(Submission.status, func.count()).group_by(Submission.status)
    ):
        by_status[status] = count
    depth, oldest = session.execute(
        select(func.count(), func.min(Job.created_at)).where(Job.state == JobState.QUEUED)
    ).one()
    # One pass: each finished job falls in one bucket (a CASE that stops at the first bound it
    # fits), then the counts are summed up into Prometheus's cumulative buckets.
    duration = Job.duration_seconds
    bucket = case(
        *((duration <= bound, n) for n, bound in enumerate(EVALUATION_BUCKETS)),
        else_=len(EVALUATION_BUCKETS),
    ).label("bucket")
    per_bucket = [0] * (len(EVALUATION_BUCKETS) + 1)
    total = 0.0
    for index, count, seconds in session.execute(
        select(bucket, func.count(), func.sum(duration))
        .where(duration.is_not(None))
        .group_by(bucket)
    ):
        per_bucket[index] = count
        total += seconds or 0.0
    return EvaluationFigures(
        submissions=by_status,
        queue_depth=depth,
        # A job re-queued after its worker died keeps its first queueing time: still waiting.
        oldest_queued_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        workers_alive=len(alive_workers(session=session, settings=settings)),
        duration_count=sum(per_bucket),
        duration_sum=total,
        duration_buckets=tuple(itertools.accumulate(per_bucket[:-1])),
    )


def families(figures: EvaluationFigures) -> Iterator[Metric]:
    """The figures as Prometheus metric families."""
    submissions = GaugeMetricFamily("zr_submissions", "Submissions by status.", labels=["status"])
    for status, count in sorted(figures.submissions.items()):
        submissions.add_metric([status], count)
    yield submissions
    yield GaugeMetricFamily(
        "zr_evaluation_queue_depth",
        "Evaluation jobs waiting for a worker.",
        value=figures.queue_depth,
    )
    yield GaugeMetricFamily(
        "zr_evaluation_oldest_queued_seconds",
        "Age of the oldest waiting evaluation job (0 when none waits).",
        value=figures.oldest_queued_seconds,
    )
    yield GaugeMetricFamily(
        "zr_workers_alive",
        "Evaluation workers whose heartbeat is recent.",
        value=figures.workers_alive,
    )
    bounds = zip(EVALUATION_BUCKETS, figures.duration_buckets, strict=True)
    buckets = [(str(float(bound)), count) for bound, count in bounds]
    yield HistogramMetricFamily(
        "zr_evaluation_duration_seconds",
        "Duration of the finished evaluation attempts recorded in the database.",
        buckets=[*buckets, ("+Inf", figures.duration_count)],
        sum_value=figures.duration_sum,
    )


class DatabaseCollector(Collector):
    """Collects the evaluation figures at each scrape; if the database cannot be read, the
    scrape still answers with the HTTP metrics, and the error is logged."""

    def __init__(self, *, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        try:
            with self.db.session(read_only=True) as session:
                figures = read_figures(session=session, settings=self.settings)
        except Exception as exc:
            log.warning("metrics: the database could not be read: %s", exc)
            return
        yield from families(figures)
