"""Submission service on SQLite and PostgreSQL: validate everything, then write; read; delete."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.helpers.factories import (
    ARCHIVE_MD5,
    create_submission,
    make_benchmark,
    make_model,
    make_user,
    publish_model,
    submission_body,
)
from zerospeech_api.benchmarks.service import NO_BENCHMARK, close_benchmark
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import (
    Submission,
    SubmissionEvent,
    SubmissionPart,
    SubmissionStatus,
)
from zerospeech_api.errors import (
    BadRequest,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    TooLarge,
    TooManyRequests,
    Unauthorized,
)
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import service, storage

MD5 = ARCHIVE_MD5
ID_SHAPE = re.compile(r"\d{8}-[a-z2-7]{16}")


def counts(db: Database) -> tuple[int, int, int]:
    with db.session(read_only=True) as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(t))
            for t in (Submission, SubmissionPart, SubmissionEvent)
        )


def test_create_multipart_writes_rows_and_first_log_line(db: Database, settings: Settings) -> None:
    user = make_user(db, settings)
    submission = create_submission(db, settings, user, submission_body(make_model(db, user)))
    assert ID_SHAPE.fullmatch(submission.id)
    with db.session(read_only=True) as session:
        row = session.get(Submission, submission.id)
        assert row.status == SubmissionStatus.UPLOADING and row.archive_hash == MD5
        assert [(p.position, p.filename, p.size) for p in row.parts] == [
            (0, "sub_0001.zip", 100),
            (1, "sub_0002.zip", 50),
        ]
        (event,) = session.scalars(select(SubmissionEvent)).all()
        assert event.status == "uploading" and "waiting for 2 part(s)" in event.message
    # Nothing on disk until content arrives.
    assert not storage.submission_dir(settings, submission.id).exists()


def test_single_part_has_one_entry_of_unknown_size(db: Database, settings: Settings) -> None:
    user = make_user(db, settings)
    data = submission_body(make_model(db, user), multipart=False, index=None, leaderboard=None)
    submission = create_submission(db, settings, user, data)
    with db.session(read_only=True) as session:
        (part,) = session.get(Submission, submission.id).parts
        assert (part.filename, part.size, part.md5) == ("sub.zip", None, MD5)
        assert session.get(Submission, submission.id).leaderboard_path == ""


def _refusals(model: str, others_model: str) -> list[tuple[dict[str, Any], type, str]]:
    index = submission_body(model)["index"]
    big = [{"filename": "p1", "filesize": 10**9, "filehash": "a" * 32}]
    return [
        ({"benchmark_id": "nope"}, NotFound, NO_BENCHMARK.format(id="nope")),
        ({"benchmark_id": "closed"}, Forbidden, "not open"),
        ({"benchmark_id": "future"}, Forbidden, "opens on"),
        ({"model_id": "no-such-model"}, NotFound, "no model"),
        ({"model_id": others_model}, Forbidden, "belongs to another user"),
        ({"hash": "xyz"}, BadRequest, "MD5 hex"),
        ({"filename": "../../x.zip"}, BadRequest, "invalid file name"),
        ({"leaderboard": "../etc/passwd"}, BadRequest, "invalid leaderboard path"),
        ({"index": None}, BadRequest, "needs an index"),
        ({"index": []}, BadRequest, "needs an index"),
        ({"multipart": False}, BadRequest, "has no index"),
        ({"index": [index[0], index[0]]}, BadRequest, "appears twice"),
        ({"index": [{**index[0], "filename": "a/b.zip"}]}, BadRequest, "invalid file name"),
        ({"index": [{**index[0], "filesize": 0}]}, BadRequest, "positive"),
        ({"index": [{**index[0], "filehash": "nothex"}]}, BadRequest, "MD5 hex"),
        ({"index": big}, BadRequest, "per request"),
        ({"benchmark_id": "small"}, TooLarge, "accepts at most 120 bytes"),
    ]


def test_every_refusal_leaves_nothing_behind(db: Database, settings: Settings) -> None:
    user, other = make_user(db, settings), make_user(db, settings)
    model, others_model = make_model(db, user), make_model(db, other)
    make_benchmark(db, "closed")
    with db.transaction() as session:
        close_benchmark(session=session, benchmark_id="closed")
    make_benchmark(db, "future", start_date=dt.date(2999, 1, 1))
    make_benchmark(db, "small", max_archive_bytes=120)
    before = counts(db)
    for overrides, error, message in _refusals(model, others_model):
        with pytest.raises(error) as caught:
            create_submission(db, settings, user, submission_body(model, **overrides))
        assert message in caught.value.detail, (overrides, caught.value.detail)
        assert counts(db) == before, overrides


def test_quota_is_checked_last_and_counts_per_user(db: Database, settings: Settings) -> None:
    user = make_user(db, settings)
    model = make_model(db, user)
    make_benchmark(db, "q", quota="1/1d")
    first = create_submission(db, settings, user, submission_body(model, "q"))
    with pytest.raises(TooManyRequests):
        create_submission(db, settings, user, submission_body(model, "q"))
    # A failed submission no longer counts.
    with db.transaction() as session:
        service.admin_set_status(
            session=session,
            settings=settings,
            submission=session.get(Submission, first.id),
            status=SubmissionStatus.FAILED,
            reason="test",
        )
    create_submission(db, settings, user, submission_body(model, "q"))


def test_views_and_visibility(db: Database, settings: Settings) -> None:
    owner, other = make_user(db, settings), make_user(db, settings)
    admin = make_user(db, settings, admin=True)
    model = make_model(db, owner)
    submission = create_submission(db, settings, owner, submission_body(model))
    with db.session(read_only=True) as session:
        for user in (owner, admin):
            found, full = service.readable_submission(
                session=session, submission_id=submission.id, user=user
            )
            assert full and service.submission_view(found, full=True)["parts"][0]["md5"] == "a" * 32
        with pytest.raises(Unauthorized):
            service.readable_submission(session=session, submission_id=submission.id, user=None)
        with pytest.raises(Forbidden):
            service.readable_submission(session=session, submission_id=submission.id, user=other)
        with pytest.raises(NotFound):
            service.get_submission(session=session, submission_id="x" * 100)
    published = publish_model(db, owner, model, "public", private=False)
    with db.session(read_only=True) as session:
        found, full = service.readable_submission(
            session=session, submission_id=published, user=other
        )
        view = service.submission_view(found, full=full)
        assert not full and "hash" not in view and view["user"] == owner.username
        mine = service.list_submissions(session=session, user=owner)
        assert {s.id for s in mine} == {submission.id, published}
        assert [s.id for s in service.list_submissions(session=session, benchmark_id="public")] == [
            published
        ]
        uploading = service.list_submissions(session=session, status="uploading")
        assert [s.id for s in uploading] == [submission.id]


@pytest.mark.parametrize(
    ("status", "owner_may"),
    [
        (SubmissionStatus.UPLOADING, True),
        (SubmissionStatus.FAILED, True),
        (SubmissionStatus.INVALID, True),
        (SubmissionStatus.CANCELLED, True),
        (SubmissionStatus.UPLOADED, False),
        (SubmissionStatus.QUEUED, False),
        (SubmissionStatus.EVALUATING, False),
        (SubmissionStatus.COMPLETED, False),
    ],
)
def test_delete_rules_and_files(
    db: Database, settings: Settings, status: SubmissionStatus, owner_may: bool
) -> None:
    user = make_user(db, settings)
    submission = create_submission(db, settings, user, submission_body(make_model(db, user)))
    folder = storage.parts_dir(settings, submission.id)
    folder.mkdir(parents=True)
    (folder / "0.part").write_bytes(b"x")
    with db.transaction() as session:
        row = session.get(Submission, submission.id)
        row.status = status

    def delete(by_admin: bool) -> None:
        with db.session() as session:
            row = session.get(Submission, submission.id)
            service.delete_submission(
                session=session, settings=settings, submission=row, by_admin=by_admin
            )

    if not owner_may:
        with pytest.raises(Conflict, match="ask an administrator"):
            delete(by_admin=False)
        assert folder.exists()
    delete(by_admin=owner_may is False)
    assert counts(db) == (0, 0, 0)
    assert not storage.submission_dir(settings, submission.id).exists()


def test_admin_cannot_mark_uploaded_without_an_archive(db: Database, settings: Settings) -> None:
    user = make_user(db, settings)
    submission = create_submission(db, settings, user, submission_body(make_model(db, user)))
    with pytest.raises(DomainError, match="has no archive"), db.transaction() as session:
        service.admin_set_status(
            session=session,
            settings=settings,
            submission=session.get(Submission, submission.id),
            status=SubmissionStatus.UPLOADED,
            reason="because",
        )
