"""HTTP routes of submissions (thin: parse, call one service function, return a schema).

`content/add` is the one `async` route: it streams the body itself (see uploads.add_part). Routes
on `router` need a caller; those on `public` answer anyone (and show more to owners and admins).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.requests import ClientDisconnect

from zerospeech_api.accounts.deps import PathUser
from zerospeech_api.deps import (
    AUTHENTICATED,
    CurrentUser,
    DatabaseRoute,
    OptionalCallerDep,
    PublicRoute,
    SessionDep,
    SettingsDep,
)
from zerospeech_api.errors import ERROR_RESPONSES
from zerospeech_api.submissions import service, uploads
from zerospeech_api.submissions.deps import OwnedSubmission, UploadTargetDep
from zerospeech_api.submissions.schemas import (
    ContentStatus,
    Deleted,
    PartAccepted,
    SubmissionCreate,
    SubmissionCreated,
    SubmissionInfo,
    SubmissionList,
)

router = APIRouter(tags=["submissions"], route_class=DatabaseRoute, dependencies=AUTHENTICATED)
public = APIRouter(tags=["submissions"], route_class=PublicRoute)
# content/add only: its dependency authenticates (see `deps.authenticates`).
upload = APIRouter(tags=["submissions"], route_class=DatabaseRoute)
log = logging.getLogger("zerospeech_api.submissions")


@router.post("/users/{username}/submissions/create", response_model=SubmissionCreated)
def create_submission(
    owner: PathUser, body: SubmissionCreate, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """Register a submission (everything is checked before anything is written); then upload
    its content with content/add."""
    submission = service.create_submission(
        session=session, settings=settings, owner=owner, data=body
    )
    return {
        "submission_id": submission.id,
        "status": submission.status,
        "benchmark": submission.benchmark_id,
        "user": owner.username,
        "auto_eval": submission.benchmark.auto_eval,
    }


@router.get("/users/{username}/submissions/list", response_model=SubmissionList)
def list_submissions(owner: PathUser, session: SessionDep) -> dict[str, Any]:
    """The user's submissions, newest first (the user themselves or an admin)."""
    found = service.list_submissions(session=session, user=owner, with_parts=True)
    return {"submissions": [service.submission_view(s, full=True) for s in found]}


@public.get("/submissions/{submission_id}/content/status", response_model=ContentStatus)
def content_status(submission_id: str, session: SessionDep) -> dict[str, str]:
    """Upload status, without authentication (the zrc client sends no token here)."""
    return uploads.content_status(session=session, submission_id=submission_id)


# The body is streamed by hand (not declared as a parameter), so document it here.
PART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}


IDLE_RESPONSE: dict[int | str, dict[str, Any]] = {
    408: {**ERROR_RESPONSES[400], "description": "The body stalled: aborted"}
}


@upload.post(
    "/submissions/{submission_id}/content/add",
    response_model=PartAccepted,
    openapi_extra=PART_BODY,
    responses=IDLE_RESPONSE,
)
async def content_add(request: Request, target: UploadTargetDep) -> Any:
    """Upload one part (multipart/form-data, one file field `file`); `part_name` must be a name
    from the index. When the last part is in, the server joins and verifies the archive."""
    state = request.app.state
    try:
        progress = await uploads.add_part(
            db=state.db,
            settings=state.settings,
            assembler=state.assembler,
            target=target,
            chunks=request.stream(),
            content_type=request.headers.get("content-type"),
            content_length=request.headers.get("content-length"),
        )
    except ClientDisconnect:
        # The client went away mid-part (it will resend it): nothing was kept, nobody listens.
        log.info("upload of %s interrupted by the client", target.entry.filename)
        return Response(status_code=400)
    return {"completed": progress.completed, "remaining": progress.remaining}


@public.get("/models/{model_id}/submissions/list", response_model=SubmissionList)
def model_submissions(
    model_id: str, caller: OptionalCallerDep, session: SessionDep
) -> dict[str, Any]:
    """Submissions of a model: all for the owner/admin, the published ones for anyone else."""
    user = caller.user if caller else None
    found, full = service.model_submissions(session=session, model_id=model_id, user=user)
    return {"submissions": [service.submission_view(s, full=full) for s in found]}


@public.get("/submissions/{submission_id}/info", response_model=SubmissionInfo)
def submission_info(
    submission_id: str, caller: OptionalCallerDep, session: SessionDep
) -> dict[str, Any]:
    """A submission: full view for its owner/admins, public view once it is published."""
    submission, full = service.readable_submission(
        session=session, submission_id=submission_id, user=caller.user if caller else None
    )
    return service.submission_view(submission, full=full)


@router.delete("/submissions/{submission_id}", response_model=Deleted)
def delete_submission(
    submission: OwnedSubmission, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """Delete a submission, its files and log (owner while uploading, failed, invalid or
    cancelled; admins always)."""
    submission_id = submission.id
    service.delete_submission(
        session=session, settings=settings, submission=submission, by_admin=user.admin
    )
    return {"submission_id": submission_id, "deleted": True}
