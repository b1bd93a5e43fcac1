"""Participants' models: readable unique ids, create, read, list, and who may see them."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from zerospeech_api.db.tables import (
    Benchmark,
    Leaderboard,
    LeaderboardEntry,
    Model,
    Submission,
    User,
)
from zerospeech_api.errors import Forbidden, NotFound, Unauthorized
from zerospeech_api.models.schemas import ModelCreate

# Messages (tests import them).
NO_MODEL = "no model {id}"
NOT_YOURS = "not allowed: this model belongs to another user"
NOT_PUBLIC = "model {id} is not public yet: log in as its owner"
NO_FREE_ID = "could not find a free model id, try again"

# Small built-in word lists: 64 x 64 x 65536 = 268 million ids, readable over the phone.
ADJECTIVES = (
    "able", "agile", "amber", "ancient", "azure", "bold", "brave", "bright", "brisk", "calm",
    "clever", "cosmic", "crisp", "curious", "daring", "deep", "eager", "early", "elegant", "fancy",
    "fast", "fearless", "gentle", "giant", "golden", "grand", "happy", "hidden", "humble", "jolly",
    "keen", "kind", "lively", "lucky", "mellow", "merry", "mighty", "modest", "noble", "polar",
    "proud", "quick", "quiet", "rapid", "rare", "royal", "rustic", "sharp", "shiny", "silent",
    "silver", "simple", "sleek", "smart", "solar", "steady", "stellar", "sunny", "swift", "tidy",
    "vivid", "warm", "wise", "witty",
)  # fmt: skip
NOUNS = (
    "albatross", "badger", "beaver", "bison", "cheetah", "condor", "crane", "dolphin", "eagle",
    "falcon", "ferret", "finch", "fox", "gazelle", "gecko", "heron", "ibex", "jaguar", "kestrel",
    "koala", "lemur", "leopard", "lynx", "marmot", "meerkat", "mole", "narwhal", "newt", "ocelot",
    "orca", "osprey", "otter", "owl", "panda", "panther", "pelican", "penguin", "puffin", "quail",
    "rabbit", "raven", "robin", "salmon", "seal", "shark", "sparrow", "squirrel", "starling",
    "stork", "swan", "tapir", "tiger", "toucan", "turtle", "walrus", "weasel", "whale", "wolf",
    "wombat", "wren", "yak", "zebra", "bat", "moose",
)  # fmt: skip
MAX_ID_ATTEMPTS = 10


def generate_model_id() -> str:
    """A fresh readable id such as `brave-otter-3f9a` (adjective-noun-4 hex digits)."""
    return f"{secrets.choice(ADJECTIVES)}-{secrets.choice(NOUNS)}-{secrets.token_hex(2)}"


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # The zrc client sends a naive local time: keep its digits, read it as UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def create_model(
    *,
    session: Session,
    owner: User,
    data: ModelCreate,
    new_id: Callable[[], str] = generate_model_id,
) -> Model:
    """Insert a model under a new unique id (retried on the rare collision, even a concurrent
    one: the primary key decides and a savepoint keeps the transaction usable)."""
    fields = data.model_dump()
    fields["created_at"] = _aware(data.created_at)
    for _ in range(MAX_ID_ATTEMPTS):
        model = Model(id=new_id(), user_id=owner.id, **fields)
        try:
            with session.begin_nested():
                session.add(model)
                session.flush()
        except IntegrityError:
            continue
        return model
    raise RuntimeError(NO_FREE_ID)


def get_model(*, session: Session, model_id: str) -> Model:
    """The model, or `NotFound`."""
    model = session.get(Model, model_id) if len(model_id) <= 64 else None
    if model is None:
        raise NotFound(NO_MODEL.format(id=model_id))
    return model


def list_user_models(*, session: Session, user: User) -> Sequence[Model]:
    """The user's models, oldest first."""
    return session.scalars(
        select(Model).where(Model.user_id == user.id).order_by(Model.registered_at, Model.id)
    ).all()


def published_submission_clause() -> Any:
    """SQL condition on `Submission`: it has an entry on a public benchmark's leaderboard."""
    return (
        exists()
        .where(
            LeaderboardEntry.submission_id == Submission.id,
            Leaderboard.id == LeaderboardEntry.leaderboard_id,
            Benchmark.id == Leaderboard.benchmark_id,
            Benchmark.private.is_(False),
        )
        .correlate(Submission)
    )


def is_published(*, session: Session, model_id: str) -> bool:
    """True once a submission of the model has an entry on a public benchmark's leaderboard."""
    return bool(
        session.scalar(
            select(
                exists()
                .where(Submission.model_id == model_id, published_submission_clause())
                .correlate(None)
            )
        )
    )


def can_manage(model: Model, user: User | None) -> bool:
    """Owner or admin."""
    return user is not None and (user.admin or user.id == model.user_id)


def readable_model(*, session: Session, model_id: str, user: User | None) -> Model:
    """The model if `user` may read it: owner and admins always, anyone once it is published
    (else 401 for anonymous callers, 403 for other users)."""
    model = get_model(session=session, model_id=model_id)
    if can_manage(model, user) or is_published(session=session, model_id=model_id):
        return model
    if user is None:
        raise Unauthorized(NOT_PUBLIC.format(id=model_id))
    raise Forbidden(NOT_YOURS)


def model_view(model: Model) -> dict[str, Any]:
    """The model as JSON (the same for everyone who may read it: models hold no secrets)."""
    return {
        "model_id": model.id,
        "owner": model.user.username,
        "description": model.description,
        "gpu_budget": model.gpu_budget,
        "train_set": model.train_set,
        "authors": model.authors,
        "institution": model.institution,
        "team": model.team,
        "author_label": model.author_label,
        "paper_url": model.paper_url,
        "code_url": model.code_url,
        "created_at": model.created_at,
        "registered_at": model.registered_at,
    }
