"""HTTP routes of models (thin: parse, call one service function, return a schema).

Visibility: owners and admins see their models and all their submissions; anyone may read a
model (and its published submissions) once one of its submissions is on a public leaderboard.
A model's submissions are listed by the submissions router.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from zerospeech_api.accounts.deps import PathUser
from zerospeech_api.deps import (
    AUTHENTICATED,
    DatabaseRoute,
    OptionalCallerDep,
    PublicRoute,
    SessionDep,
)
from zerospeech_api.models import service
from zerospeech_api.models.schemas import ModelCreate, ModelCreated, ModelInfo, ModelList

router = APIRouter(tags=["models"], route_class=DatabaseRoute, dependencies=AUTHENTICATED)
public = APIRouter(tags=["models"], route_class=PublicRoute)


@router.post("/users/{username}/models/create", response_model=ModelCreated)
def create_model(
    owner: PathUser,
    session: SessionDep,
    body: ModelCreate,
    author_name: Annotated[
        str | None,
        Query(max_length=200, description="Accepted for the zrc client; ids never derive from it."),
    ] = None,
) -> dict[str, str]:
    """Register a model and return its new server-generated id (`brave-otter-3f9a`)."""
    model = service.create_model(session=session, owner=owner, data=body)
    return {"model_id": model.id}


@router.get("/users/{username}/models/list", response_model=ModelList)
def list_models(owner: PathUser, session: SessionDep) -> dict[str, Any]:
    """The user's models (the user themselves or an admin)."""
    models = service.list_user_models(session=session, user=owner)
    return {"models": [service.model_view(m) for m in models]}


@public.get("/models/{model_id}/info", response_model=ModelInfo)
def model_info(model_id: str, caller: OptionalCallerDep, session: SessionDep) -> dict[str, Any]:
    """A model: owner/admin always, anyone once it is published."""
    user = caller.user if caller else None
    model = service.readable_model(session=session, model_id=model_id, user=user)
    return service.model_view(model)
