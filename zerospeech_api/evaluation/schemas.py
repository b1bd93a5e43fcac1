"""Response shapes of the participant's evaluation view."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class StatusEvent(BaseModel):
    at: str
    status: str | None = Field(description="The new status, or null for a plain message.")
    message: str


class SubmissionLog(BaseModel):
    """Status history with times, and the end of the evaluator's output."""

    submission_id: str
    status: str
    events: list[StatusEvent]
    log: str = Field(
        description="The last bytes of evaluation.log (UTF-8, invalid bytes replaced)."
    )
    log_size: int
    log_truncated: bool


class SubmissionScores(BaseModel):
    """The stamped entry of a completed submission and where it is published."""

    submission_id: str
    status: str
    entry: dict[str, Any] | None
    entries: dict[str, dict[str, Any]] = Field(description="Stamped entries by archive path.")
    leaderboards: list[str]


class Cancelled(BaseModel):
    submission_id: str
    status: str
    evaluation_stopped: bool = Field(description="A running evaluation was told to stop.")
