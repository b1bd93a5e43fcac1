"""One evaluation attempt's files, all in its own folder: <submission>/attempts/<job>-<claim>/.

A worker writes only inside its attempt's folder (log, unpacked copy, scratch, results), so a
worker that stalled past its lease and wakes up cannot touch what the new attempt uses. Results
leave the folder only through the publication step, which is atomic with the ownership check
(worker.py). Scratch of other attempts is removed only by the job's current owner.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from zerospeech_api.db.tables import EvaluatorRunner
from zerospeech_api.evaluation import jobs
from zerospeech_api.leaderboards.results import SubmissionFacts
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage

LOG_NAME = "evaluation.log"
# Folders that can be large and are never needed after the attempt ends (the log stays).
SCRATCH = ("unpacked", "unpacked.partial", "work")


@dataclass(frozen=True)
class JobPlan:
    """Everything read from the database before the slow work starts."""

    facts: SubmissionFacts
    evaluator_kind: str
    command: str | None
    timeout: float
    leaderboard_paths: list[str]
    runner: str = EvaluatorRunner.LOCAL
    sbatch_args: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AttemptFiles:
    """The paths of one attempt."""

    root: Path

    @classmethod
    def of(cls, settings: Settings, claimed: jobs.Claimed) -> AttemptFiles:
        return cls(
            storage.attempt_dir(settings, claimed.submission_id, claimed.job_id, claimed.claim)
        )

    @property
    def log(self) -> Path:
        return self.root / LOG_NAME

    @property
    def unpacked(self) -> Path:
        return self.root / "unpacked"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    def remove_scratch(self) -> None:
        """Delete the unpacked copy and scratch (the archive stays; a copy would double it)."""
        remove_scratch(self.root)


def remove_scratch(folder: Path) -> None:
    """Delete the scratch folders under `folder` (an attempt's, or a submission's old layout)."""
    for name in SCRATCH:
        shutil.rmtree(folder / name, ignore_errors=True)


def remove_stale_scratch(settings: Settings, submission_id: str, *, keep: Path | None) -> None:
    """Delete the scratch of the submission's attempts other than `keep` (dead or stalled
    workers'). Only the job's owner, or a worker that just failed the job for good, calls it."""
    submission = storage.submission_dir(settings, submission_id)
    remove_scratch(submission)  # the layout before attempts had folders
    attempts = submission / "attempts"
    if attempts.is_dir():
        for folder in attempts.iterdir():
            if folder != keep:
                remove_scratch(folder)


def current_log_path(*, session: Session, settings: Settings, submission_id: str) -> Path:
    """The log of the submission's most recent attempt (older data: the single old log)."""
    latest = jobs.latest_attempt(session=session, submission_id=submission_id)
    if latest is not None:
        path = storage.attempt_dir(settings, submission_id, *latest) / LOG_NAME
        if path.exists():
            return path
    return storage.evaluation_log_path(settings, submission_id)
