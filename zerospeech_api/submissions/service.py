"""Submissions: create (validate everything, then write), read, list, delete, admin status."""

from __future__ import annotations

import base64
import datetime as dt
import re
import secrets
import shutil
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload

from zerospeech_api.benchmarks import service as benchmarks
from zerospeech_api.db.tables import (
    Benchmark,
    Submission,
    SubmissionPart,
    SubmissionStatus,
    User,
    utcnow,
)
from zerospeech_api.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge, Unauthorized
from zerospeech_api.models import service as models
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage
from zerospeech_api.submissions.events import set_status
from zerospeech_api.submissions.schemas import SubmissionCreate

# Messages (tests import them).
NO_SUBMISSION = "no submission {id}"
NOT_YOURS = "not allowed: this submission belongs to another user"
NOT_PUBLIC = "submission {id} is not public: log in as its owner"
MODEL_NOT_YOURS = "model {id} belongs to another user"
BAD_HASH = "{what} must be an MD5 hex digest (32 hexadecimal digits), got {value!r}"
INDEX_REQUIRED = "a multipart submission needs an index: a non-empty list of parts"
INDEX_FORBIDDEN = "a single-part submission has no index: send index null"
DUPLICATE_PART = "part name {name!r} appears twice in the index"
BAD_PART_SIZE = "part {name!r}: filesize must be a positive number of bytes"
PART_TOO_LARGE = (
    "part {name!r} is {size} bytes but this server accepts at most {limit} bytes per request: "
    "split the archive into smaller parts"
)
ARCHIVE_TOO_LARGE = "the archive is {size} bytes; benchmark {id} accepts at most {limit} bytes"
CANNOT_DELETE = (
    "a submission that is {status} cannot be deleted by its owner (only while uploading, failed, "
    "invalid or cancelled): ask an administrator"
)
NO_ARCHIVE = "submission {id} has no archive: it cannot be marked uploaded"

_MD5 = re.compile(r"[0-9a-f]{32}")
# Room for the multipart headers and boundaries around one part in a request body.
REQUEST_OVERHEAD = 64 * 1024
OWNER_MAY_DELETE = (
    SubmissionStatus.UPLOADING,
    SubmissionStatus.FAILED,
    SubmissionStatus.INVALID,
    SubmissionStatus.CANCELLED,
)


def new_submission_id(now: dt.datetime | None = None) -> str:
    """`YYYYMMDD-` and 16 random base32 characters (80 bits): URL-safe and unguessable."""
    day = (now or utcnow()).strftime("%Y%m%d")
    return f"{day}-{base64.b32encode(secrets.token_bytes(10)).decode().lower()}"


def check_md5(value: str, what: str) -> str:
    """The lower-case MD5 hex digest, or `BadRequest`."""
    digest = value.strip().lower()
    if not _MD5.fullmatch(digest):
        raise BadRequest(BAD_HASH.format(what=what, value=value[:64]))
    return digest


def _parts_from_request(
    data: SubmissionCreate, *, archive_hash: str, settings: Settings, benchmark: Benchmark
) -> list[SubmissionPart]:
    """Index entries (multipart), or the one entry of a single-part upload (size unknown)."""
    limit = benchmarks.archive_limit(benchmark, settings)
    if not data.multipart:
        if data.index:
            raise BadRequest(INDEX_FORBIDDEN)
        return [SubmissionPart(position=0, filename=data.filename, size=None, md5=archive_hash)]
    if not data.index:
        raise BadRequest(INDEX_REQUIRED)
    per_request = settings.max_request_bytes - REQUEST_OVERHEAD
    seen: set[str] = set()
    parts = []
    for position, entry in enumerate(data.index):
        name = storage.check_name(entry.filename)
        if name in seen:
            raise BadRequest(DUPLICATE_PART.format(name=name))
        seen.add(name)
        if entry.filesize < 1:
            raise BadRequest(BAD_PART_SIZE.format(name=name))
        if entry.filesize > per_request:
            raise BadRequest(
                PART_TOO_LARGE.format(name=name, size=entry.filesize, limit=per_request)
            )
        md5 = check_md5(entry.filehash, f"filehash of part {name!r}")
        parts.append(SubmissionPart(position=position, filename=name, size=entry.filesize, md5=md5))
    total = sum(p.size or 0 for p in parts)
    if total > limit:
        raise TooLarge(ARCHIVE_TOO_LARGE.format(size=total, id=benchmark.id, limit=limit))
    return parts


def create_submission(
    *,
    session: Session,
    settings: Settings,
    owner: User,
    data: SubmissionCreate,
    now: dt.datetime | None = None,
) -> Submission:
    """Register a submission in `uploading` state. Everything is checked first (benchmark open,
    model owned, names, hashes, index, sizes, quota): on any error nothing is written."""
    now = now or utcnow()
    benchmark = benchmarks.get_benchmark(session=session, benchmark_id=data.benchmark_id)
    benchmarks.require_open(benchmark, on=now.date())
    model = models.get_model(session=session, model_id=data.model_id)
    if model.user_id != owner.id:
        raise Forbidden(MODEL_NOT_YOURS.format(id=model.id))
    filename = storage.check_name(data.filename)
    archive_hash = check_md5(data.hash, "hash")
    leaderboard = storage.check_entry_path(data.leaderboard)
    parts = _parts_from_request(
        data, archive_hash=archive_hash, settings=settings, benchmark=benchmark
    )
    benchmarks.require_quota(session=session, benchmark=benchmark, user=owner, now=now)

    submission = Submission(
        id=new_submission_id(now),
        user_id=owner.id,
        model_id=model.id,
        benchmark_id=benchmark.id,
        filename=filename,
        archive_hash=archive_hash,
        multipart=data.multipart,
        has_scores=data.has_scores,
        leaderboard_path=leaderboard,
        author_label=data.author_label,
        created_at=now,
        updated_at=now,
    )
    how = f"{len(parts)} part(s)" if data.multipart else "a single-part upload"
    # The row and its first log line are inserted together (the status column is required).
    set_status(
        session=session,
        submission=submission,
        status=SubmissionStatus.UPLOADING,
        reason=f"created by {owner.username}; waiting for {how}",
    )
    session.add(submission)
    for part in parts:
        part.submission_id = submission.id
        session.add(part)
    session.flush()
    return submission


def get_submission(*, session: Session, submission_id: str) -> Submission:
    """The submission, or `NotFound`."""
    submission = session.get(Submission, submission_id) if len(submission_id) <= 64 else None
    if submission is None:
        raise NotFound(NO_SUBMISSION.format(id=submission_id))
    return submission


def can_manage(submission: Submission, user: User | None) -> bool:
    """Owner or admin."""
    return user is not None and (user.admin or user.id == submission.user_id)


def owned_submission(*, session: Session, submission_id: str, user: User) -> Submission:
    """The submission if `user` owns it or is an admin (404 unknown, 403 someone else's)."""
    submission = get_submission(session=session, submission_id=submission_id)
    if not can_manage(submission, user):
        raise Forbidden(NOT_YOURS)
    return submission


def is_published(*, session: Session, submission_id: str) -> bool:
    """True once the submission has an entry on a public benchmark's leaderboard."""
    return bool(
        session.scalar(
            select(Submission.id).where(
                Submission.id == submission_id, models.published_submission_clause()
            )
        )
    )


def readable_submission(
    *, session: Session, submission_id: str, user: User | None
) -> tuple[Submission, bool]:
    """The submission and whether `user` gets the full view (owner/admin). Others see the public
    view of published submissions only (401 anonymous, 403 another user)."""
    submission = get_submission(session=session, submission_id=submission_id)
    if can_manage(submission, user):
        return submission, True
    if is_published(session=session, submission_id=submission_id):
        return submission, False
    if user is None:
        raise Unauthorized(NOT_PUBLIC.format(id=submission_id))
    raise Forbidden(NOT_YOURS)


def list_submissions(
    *,
    session: Session,
    user: User | None = None,
    model_id: str | None = None,
    benchmark_id: str | None = None,
    status: str | None = None,
    published_only: bool = False,
    with_parts: bool = False,
) -> Sequence[Submission]:
    """Submissions matching every given filter, newest first; `with_parts` loads their parts in
    one query (for the full view)."""
    query = select(Submission).order_by(Submission.created_at.desc(), Submission.id)
    if with_parts:
        query = query.options(selectinload(Submission.parts))
    if user is not None:
        query = query.where(Submission.user_id == user.id)
    if model_id is not None:
        query = query.where(Submission.model_id == model_id)
    if benchmark_id is not None:
        query = query.where(Submission.benchmark_id == benchmark_id)
    if status is not None:
        query = query.where(Submission.status == status)
    if published_only:
        query = query.where(models.published_submission_clause())
    return session.scalars(query).all()


def model_submissions(
    *, session: Session, model_id: str, user: User | None
) -> tuple[Sequence[Submission], bool]:
    """Submissions of a model: all for its owner/admins, the published ones for anyone once the
    model is published; returns them and whether the full view applies."""
    model = models.readable_model(session=session, model_id=model_id, user=user)
    full = models.can_manage(model, user)
    found = list_submissions(
        session=session, model_id=model.id, published_only=not full, with_parts=full
    )
    return found, full


def submission_view(submission: Submission, *, full: bool) -> dict[str, Any]:
    """The submission as JSON: the public view has ids, status, label and dates only."""
    view: dict[str, Any] = {
        "submission_id": submission.id,
        "model_id": submission.model_id,
        "benchmark": submission.benchmark_id,
        "user": submission.user.username,
        "status": submission.status,
        "author_label": submission.author_label,
        "created_at": submission.created_at,
        "updated_at": submission.updated_at,
    }
    if full:
        view |= {
            "filename": submission.filename,
            "hash": submission.archive_hash,
            "archive_size": submission.archive_size,
            "multipart": submission.multipart,
            "has_scores": submission.has_scores,
            "leaderboard": submission.leaderboard_path,
            "auto_eval": submission.benchmark.auto_eval,
            "parts": [
                {
                    "filename": p.filename,
                    "size": p.size,
                    "md5": p.md5,
                    "received": p.received_at is not None,
                }
                for p in submission.parts
            ],
        }
    return view


def remove_files(settings: Settings, submission_id: str) -> None:
    """Remove a submission's folder (after its rows are gone)."""
    shutil.rmtree(storage.submission_dir(settings, submission_id), ignore_errors=True)


def delete_submission(
    *, session: Session, settings: Settings, submission: Submission, by_admin: bool
) -> None:
    """Delete rows (parts, log, jobs and entries cascade) and commit, then remove the files.

    Owners may delete while uploading, failed, invalid or cancelled; admins always. The rows go
    first: a crash in between leaves a folder without rows, which start-up recovery removes.
    """
    # Lock the row (and re-read it) so an upload or a join finishing now serialises with us.
    session.refresh(submission, with_for_update=True)
    if not by_admin and submission.status not in OWNER_MAY_DELETE:
        raise Conflict(CANNOT_DELETE.format(status=submission.status))
    submission_id = submission.id
    session.expunge(submission)
    session.execute(delete(Submission).where(Submission.id == submission_id))
    session.commit()
    remove_files(settings, submission_id)


def admin_set_status(
    *,
    session: Session,
    settings: Settings,
    submission: Submission,
    status: SubmissionStatus,
    reason: str,
) -> None:
    """An administrator's status change, logged with its reason."""
    if (
        status == SubmissionStatus.UPLOADED
        and not storage.archive_path(settings, submission.id).is_file()
    ):
        raise Conflict(NO_ARCHIVE.format(id=submission.id))
    set_status(session=session, submission=submission, status=status, reason=f"admin: {reason}")
    session.flush()
