"""Request and response shapes of the model routes (the zrc client's `models/create`).

Free text obeys security.inputs: long texts may span lines (they come from the participant's
meta.yaml), short ones may not; no field takes other control characters; dates are bounded."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from zerospeech_api.security.inputs import MULTI_LINE, ONE_LINE, SaneDatetime

MAX_TEXT = 10_000
_URL = re.compile(r"https?://[^\s\x00-\x1f\x7f]+", re.IGNORECASE)
BAD_URL = "must be an http:// or https:// URL"


def _blank_to_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _none_to_empty(value: object) -> object:
    return "" if value is None else value


def _http_url(value: str | None) -> str | None:
    if value is not None and not _URL.fullmatch(value):
        raise ValueError(BAD_URL)
    return value


Text = Annotated[
    str, BeforeValidator(_none_to_empty), StringConstraints(max_length=MAX_TEXT), MULTI_LINE
]
Url = Annotated[
    Annotated[str, StringConstraints(max_length=2000), ONE_LINE] | None,
    BeforeValidator(_blank_to_none),
    AfterValidator(_http_url),
]
Label = Annotated[str, StringConstraints(max_length=200), ONE_LINE]


class ModelCreate(BaseModel):
    """What the zrc client sends to `models/create`; unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    description: Text
    gpu_budget: Annotated[
        str, BeforeValidator(_none_to_empty), StringConstraints(max_length=200), ONE_LINE
    ] = ""
    train_set: Text = ""
    authors: Text = ""
    institution: Text = ""
    team: Text = ""
    author_label: Label | None = None
    paper_url: Url = None
    code_url: Url = None
    created_at: SaneDatetime | None = Field(
        None,
        description="When the model was made (ISO datetime; naive values are read as UTC; "
        "years 1900 to 2199).",
    )


class ModelCreated(BaseModel):
    model_id: str


class ModelInfo(BaseModel):
    model_id: str
    owner: str
    description: str
    gpu_budget: str
    train_set: str
    authors: str
    institution: str
    team: str
    author_label: str | None
    paper_url: str | None
    code_url: str | None
    created_at: dt.datetime | None
    registered_at: dt.datetime


class ModelList(BaseModel):
    models: list[ModelInfo]
