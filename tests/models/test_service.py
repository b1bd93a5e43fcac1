"""Model service on SQLite and PostgreSQL: readable unique ids, even under concurrency."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import pytest

from tests.helpers.factories import (
    MODEL_ID_SHAPE,
    make_user,
    model_info,
    publish_model,
)
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Model
from zerospeech_api.errors import Forbidden, NotFound, Unauthorized
from zerospeech_api.models import service
from zerospeech_api.models.schemas import ModelCreate
from zerospeech_api.settings import Settings


def test_generated_ids_are_readable_and_varied() -> None:
    ids = {service.generate_model_id() for _ in range(500)}
    assert all(MODEL_ID_SHAPE.fullmatch(i) for i in ids)
    assert len(ids) == 500
    assert len(service.ADJECTIVES) == len(set(service.ADJECTIVES)) == 64
    assert len(service.NOUNS) == len(set(service.NOUNS)) == 64


def _create(db: Database, user, new_id: Callable[[], str] | None = None, **info) -> str:
    with db.transaction() as session:
        data = ModelCreate(**model_info(**info))
        kwargs = {"new_id": new_id} if new_id else {}
        return service.create_model(
            session=session, owner=session.merge(user), data=data, **kwargs
        ).id


def test_naive_created_at_is_read_as_utc(db: Database, settings: Settings) -> None:
    user = make_user(db, settings)
    naive = _create(db, user, created_at="2023-05-01T10:20:30.123456")
    aware = _create(db, user, created_at="2023-05-01T12:20:30+02:00")
    none = _create(db, user, created_at=None)
    with db.session(read_only=True) as session:
        expected = dt.datetime(2023, 5, 1, 10, 20, 30, 123456, tzinfo=dt.UTC)
        assert session.get(Model, naive).created_at == expected
        assert session.get(Model, aware).created_at == expected.replace(microsecond=0)
        assert session.get(Model, none).created_at is None


def test_a_taken_id_is_retried(db: Database, settings: Settings) -> None:
    user = make_user(db, settings)
    first = _create(db, user, new_id=lambda: "brave-otter-0000")
    ids = iter(["brave-otter-0000", "brave-otter-0000", "calm-whale-0001"])
    second = _create(db, user, new_id=lambda: next(ids))
    assert (first, second) == ("brave-otter-0000", "calm-whale-0001")


def test_concurrent_creations_get_distinct_ids(db: Database, settings: Settings) -> None:
    user = make_user(db, settings)
    threads_n = 6
    barrier = threading.Barrier(threads_n)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        # Everyone first tries the same id; the primary key lets exactly one keep it.
        ids = iter(["clash-clash-0000", f"own-id-{n:04x}"])
        try:
            barrier.wait()
            results.append(_create(db, user, new_id=lambda: next(ids)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(set(results)) == threads_n
    assert results.count("clash-clash-0000") == 1


def test_visibility_owner_admin_then_public_once_published(
    db: Database, settings: Settings
) -> None:
    owner, other = make_user(db, settings), make_user(db, settings)
    admin = make_user(db, settings, admin=True)
    model_id = _create(db, owner)
    with db.session(read_only=True) as session:
        assert service.readable_model(session=session, model_id=model_id, user=owner).id == model_id
        assert service.readable_model(session=session, model_id=model_id, user=admin).id == model_id
        with pytest.raises(Unauthorized):
            service.readable_model(session=session, model_id=model_id, user=None)
        with pytest.raises(Forbidden):
            service.readable_model(session=session, model_id=model_id, user=other)
        with pytest.raises(NotFound):
            service.readable_model(session=session, model_id="no-such-0000", user=admin)
    publish_model(db, owner, model_id, "public-bench", private=False)
    with db.session(read_only=True) as session:
        assert service.is_published(session=session, model_id=model_id)
        assert service.readable_model(session=session, model_id=model_id, user=None)


def test_entries_on_private_benchmarks_do_not_publish(db: Database, settings: Settings) -> None:
    owner = make_user(db, settings)
    model_id = _create(db, owner)
    publish_model(db, owner, model_id, "private-bench", private=True)
    with db.session(read_only=True) as session:
        assert not service.is_published(session=session, model_id=model_id)
