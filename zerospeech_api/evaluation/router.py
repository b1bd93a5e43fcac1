"""Participant view of an evaluation: `/submissions/{id}/log` and `/submissions/{id}/scores`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from zerospeech_api.deps import (
    AUTHENTICATED,
    CurrentUser,
    DatabaseRoute,
    OptionalCallerDep,
    PublicRoute,
    SessionDep,
    SettingsDep,
)
from zerospeech_api.evaluation import queue, view
from zerospeech_api.evaluation.schemas import Cancelled, SubmissionLog, SubmissionScores
from zerospeech_api.submissions.deps import OwnedSubmission

router = APIRouter(tags=["evaluation"], route_class=DatabaseRoute, dependencies=AUTHENTICATED)
public = APIRouter(tags=["evaluation"], route_class=PublicRoute)


@router.get("/submissions/{submission_id}/log", response_model=SubmissionLog)
def submission_log(
    submission: OwnedSubmission,
    session: SessionDep,
    settings: SettingsDep,
    tail_bytes: Annotated[
        int, Query(ge=0, le=view.MAX_LOG_TAIL_BYTES, description="Bytes of log to return.")
    ] = view.LOG_TAIL_BYTES,
) -> dict[str, Any]:
    """Status changes with their times and the end of the evaluation log (owner or admin)."""
    return view.submission_log(
        session=session, settings=settings, submission=submission, tail_bytes=tail_bytes
    )


@public.get("/submissions/{submission_id}/scores", response_model=SubmissionScores)
def submission_scores(
    submission_id: str, caller: OptionalCallerDep, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """The stamped scores of a completed submission: owner/admin, or anyone once it is public."""
    return view.submission_scores(
        session=session,
        settings=settings,
        submission_id=submission_id,
        user=caller.user if caller else None,
    )


@router.post("/submissions/{submission_id}/cancel", response_model=Cancelled)
def cancel_submission(
    submission: OwnedSubmission, user: CurrentUser, session: SessionDep
) -> dict[str, Any]:
    """Cancel an uploaded, queued or evaluating submission (owner or admin): a queued job is
    dropped, a running evaluation stopped; it ends `cancelled` and no longer counts in the quota."""
    stopped = queue.cancel_submission(session=session, submission=submission, by=user)
    return {
        "submission_id": submission.id,
        "status": submission.status,
        "evaluation_stopped": stopped,
    }
