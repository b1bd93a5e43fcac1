"""Request dependencies of submissions: an owned submission, the target of a content/add."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from zerospeech_api.db.tables import Submission
from zerospeech_api.deps import (
    NOT_AUTHENTICATED,
    CurrentUser,
    DatabaseDep,
    SessionDep,
    SettingsDep,
    TokenDep,
    authenticates,
    reads_in_one_hop,
)
from zerospeech_api.errors import Unauthorized
from zerospeech_api.submissions.service import owned_submission
from zerospeech_api.submissions.uploads import UploadTarget, upload_target


@reads_in_one_hop
def get_owned_submission(submission_id: str, user: CurrentUser, session: SessionDep) -> Submission:
    """The submission if the caller owns it or is an admin (404 unknown, 403 someone else's)."""
    return owned_submission(session=session, submission_id=submission_id, user=user)


OwnedSubmission = Annotated[Submission, Depends(get_owned_submission)]


@authenticates
def get_upload_target(
    request: Request,
    submission_id: str,
    part_name: Annotated[str, Query(max_length=1000, description="A file name from the index.")],
    db: DatabaseDep,
    settings: SettingsDep,
    token: TokenDep,
) -> UploadTarget:
    """What a content/add may deliver, decided before its body is read (401 without a token)."""
    if not token:
        raise Unauthorized(NOT_AUTHENTICATED)
    return upload_target(
        db=db,
        settings=settings,
        token=token,
        submission_id=submission_id,
        part_name=part_name,
        content_length=request.headers.get("content-length"),
    )


UploadTargetDep = Annotated[UploadTarget, Depends(get_upload_target)]
