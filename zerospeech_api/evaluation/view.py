"""The participant's view of an evaluation: status history, log tail, scores."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from zerospeech_api.db.tables import (
    Benchmark,
    Leaderboard,
    LeaderboardEntry,
    Submission,
    SubmissionStatus,
    User,
)
from zerospeech_api.errors import Conflict, Forbidden, Unauthorized
from zerospeech_api.evaluation.attempt import current_log_path
from zerospeech_api.leaderboards.results import read_results, results_path
from zerospeech_api.settings import Settings
from zerospeech_api.submissions.events import submission_events
from zerospeech_api.submissions.service import NOT_YOURS, can_manage, get_submission

LOG_TAIL_BYTES = 64 * 1024
MAX_LOG_TAIL_BYTES = 1024 * 1024
NO_SCORES_YET = "the submission has no scores: its status is {status}"


def read_tail(path: os.PathLike[str], limit: int) -> tuple[str, int, bool]:
    """The last `limit` bytes of a file as text, its size, and whether it was cut."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - limit))
            data = handle.read(limit)
    except FileNotFoundError:
        return "", 0, False
    return data.decode("utf-8", errors="replace"), size, size > limit


def submission_log(
    *, session: Session, settings: Settings, submission: Submission, tail_bytes: int
) -> dict[str, Any]:
    """Status events with times, and the tail of the latest attempt's evaluation log."""
    events = submission_events(session=session, submission_id=submission.id)
    text, size, truncated = read_tail(
        current_log_path(session=session, settings=settings, submission_id=submission.id),
        max(0, min(tail_bytes, MAX_LOG_TAIL_BYTES)),
    )
    return {
        "submission_id": submission.id,
        "status": submission.status,
        "events": [
            {"at": e.at.isoformat(), "status": e.status, "message": e.message} for e in events
        ],
        "log": text,
        "log_size": size,
        "log_truncated": truncated,
    }


def public_labels(*, session: Session, submission_id: str) -> list[str]:
    """Labels of the public leaderboards that show this submission."""
    return list(
        session.scalars(
            select(Leaderboard.label)
            .join(LeaderboardEntry, LeaderboardEntry.leaderboard_id == Leaderboard.id)
            .join(Benchmark, Benchmark.id == Leaderboard.benchmark_id)
            .where(LeaderboardEntry.submission_id == submission_id, Benchmark.private.is_(False))
            .order_by(Leaderboard.label)
        ).all()
    )


def submission_scores(
    *, session: Session, settings: Settings, submission_id: str, user: User | None
) -> dict[str, Any]:
    """The stamped entries: owner and admins always; anyone once on a public leaderboard."""
    submission = get_submission(session=session, submission_id=submission_id)
    labels = public_labels(session=session, submission_id=submission_id)
    if not can_manage(submission, user) and not labels:
        if user is None:
            raise Unauthorized("these scores are not public: log in as their owner")
        raise Forbidden(NOT_YOURS)
    if submission.status != SubmissionStatus.COMPLETED:
        raise Conflict(NO_SCORES_YET.format(status=submission.status))
    entries = read_results(results_path(settings, submission_id))
    primary = entries.get(submission.leaderboard_path) or next(iter(entries.values()), None)
    return {
        "submission_id": submission.id,
        "status": submission.status,
        "entry": primary,
        "entries": entries,
        "leaderboards": labels,
    }
