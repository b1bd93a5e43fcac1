"""Request and response shapes of the submission routes (the zrc contract, then extras)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from zerospeech_api.security.inputs import ONE_LINE

MAX_PARTS = 10_000


def _none_to_empty(value: object) -> object:
    return "" if value is None else value


Short = Annotated[str, StringConstraints(max_length=1000), ONE_LINE]


class IndexEntry(BaseModel):
    """One part of a multipart upload, in order."""

    model_config = ConfigDict(extra="ignore")

    filename: Short
    filesize: int
    filehash: Short


class SubmissionCreate(BaseModel):
    """What the zrc client sends to `submissions/create`; unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    model_id: Annotated[str, StringConstraints(max_length=64), ONE_LINE]
    benchmark_id: Annotated[str, StringConstraints(max_length=64), ONE_LINE]
    filename: Short
    hash: Short = Field(description="MD5 (hex) of the whole archive.")
    has_scores: bool = False
    multipart: bool = False
    author_label: Annotated[str, StringConstraints(max_length=200), ONE_LINE] | None = None
    index: list[IndexEntry] | None = Field(
        None, max_length=MAX_PARTS, description="Parts in order (null for single-part)."
    )
    leaderboard: Annotated[
        str, BeforeValidator(_none_to_empty), StringConstraints(max_length=1000), ONE_LINE
    ] = Field("", description="Path of the leaderboard entry inside the archive, or empty.")


class SubmissionCreated(BaseModel):
    submission_id: str
    status: str
    benchmark: str
    user: str
    auto_eval: bool


class ContentStatus(BaseModel):
    submission_id: str
    status: str


class PartAccepted(BaseModel):
    """The part was verified and stored; `remaining` lists the part names still expected."""

    completed: bool
    remaining: list[str]


class PartInfo(BaseModel):
    filename: str
    size: int | None
    md5: str
    received: bool


class SubmissionInfo(BaseModel):
    """Full view for the owner and admins; the public view leaves the optional keys null."""

    submission_id: str
    model_id: str
    benchmark: str
    user: str
    status: str
    author_label: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    filename: str | None = None
    hash: str | None = None
    archive_size: int | None = None
    multipart: bool | None = None
    has_scores: bool | None = None
    leaderboard: str | None = None
    auto_eval: bool | None = None
    parts: list[PartInfo] | None = None


class SubmissionList(BaseModel):
    submissions: list[SubmissionInfo]


class Deleted(BaseModel):
    submission_id: str
    deleted: bool
