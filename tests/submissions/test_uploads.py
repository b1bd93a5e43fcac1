"""Receiving parts: the streaming multipart reader, verification, placement, concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.helpers.factories import (
    multipart_body,
    received_file,
    store_part,
    three_parts,
    upload_target,
)
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Submission, SubmissionEvent, SubmissionStatus
from zerospeech_api.errors import BadRequest, Conflict, RequestTimeout
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage, uploads
from zerospeech_api.submissions.assembly import join_submission


async def chunks_of(body: bytes, sizes: list[int] | int, seen: list[int] | None = None):
    """Yield the body in pieces (a size, or a list of sizes cycled)."""
    sizes = sizes if isinstance(sizes, list) else [sizes]
    i = n = 0
    while i < len(body):
        size = sizes[n % len(sizes)]
        n += 1
        if seen is not None:
            seen.append(i)
        yield body[i : i + size]
        i += size


def receive(
    tmp_path: Path, stream: AsyncIterator[bytes], content_type: str, max_bytes: int = 10**9
) -> uploads.ReceivedFile:
    return asyncio.run(
        uploads.receive_file(
            stream,
            content_type=content_type,
            directory=tmp_path / "tmp",
            label="sub",
            max_bytes=max_bytes,
            too_big_message="too big",
        )
    )


def leftovers(tmp_path: Path) -> list[str]:
    return (
        sorted(p.name for p in (tmp_path / "tmp").iterdir()) if (tmp_path / "tmp").exists() else []
    )


@pytest.mark.parametrize(
    ("size", "pieces"), [(0, 7), (1, 1), (5000, 1), (3 * (1 << 20) + 17, [65536, 1, 300_001])]
)
def test_streams_the_file_field_with_md5_and_size(tmp_path: Path, size: int, pieces) -> None:
    data = random.Random(size).randbytes(size)
    body, content_type = multipart_body(files={"file": ("p.zip", data, "application/octet-stream")})
    received = receive(tmp_path, chunks_of(body, pieces), content_type)
    assert received.size == size and received.md5 == hashlib.md5(data).hexdigest()
    assert received.path.read_bytes() == data
    received.discard()
    assert leftovers(tmp_path) == []


def test_too_big_is_refused_drained_and_discarded(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    body, content_type = multipart_body(files={"file": ("p.zip", data)})
    seen: list[int] = []
    with pytest.raises(BadRequest, match="too big"):
        receive(tmp_path, chunks_of(body, 65536, seen), content_type, max_bytes=1 << 20)
    assert seen[-1] + 65536 >= len(body)  # the whole body was read, so the client gets the 400
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("fields", "files", "message"),
    [
        ({"note": "x"}, {"file": ("p", b"abc")}, "unexpected form field 'note'"),
        (None, {"file": ("p", b"abc"), "other": ("q", b"d")}, "unexpected form field 'other'"),
        (None, {"upload": ("p", b"abc")}, "unexpected form field 'upload'"),
        (None, {"file": (None, b"a text field, not a file")}, "unexpected form field 'file'"),
    ],
)
def test_exactly_one_file_field_named_file(tmp_path: Path, fields, files, message) -> None:
    body, content_type = multipart_body(fields, files)
    with pytest.raises(BadRequest, match=message):
        receive(tmp_path, chunks_of(body, 10), content_type)
    assert leftovers(tmp_path) == []


def test_malformed_bodies(tmp_path: Path) -> None:
    body, content_type = multipart_body(files={"file": ("p", b"abc" * 1000)})
    with pytest.raises(BadRequest, match=uploads.MALFORMED):  # cut before the closing boundary
        receive(tmp_path, chunks_of(body[:-50], 100), content_type)
    with pytest.raises(BadRequest, match=uploads.MALFORMED):
        receive(tmp_path, chunks_of(b"garbage" * 100, 100), content_type)
    with pytest.raises(BadRequest, match=uploads.NO_FILE_FIELD):
        receive(tmp_path, chunks_of(b"--BOUND--\r\n", 3), "multipart/form-data; boundary=BOUND")
    for bad_type in (None, "application/json", "multipart/form-data"):
        with pytest.raises(BadRequest, match="multipart/form-data"):
            receive(tmp_path, chunks_of(body, 100), bad_type)  # type: ignore[arg-type]
    assert leftovers(tmp_path) == []


def test_a_dropped_connection_leaves_nothing(tmp_path: Path) -> None:
    body, content_type = multipart_body(files={"file": ("p", os.urandom(3 << 20))})

    async def broken() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(body, 65536):
            yield chunk
            if len(chunk) and random.random() < 0.05:
                raise ConnectionResetError("client went away")
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        receive(tmp_path, broken(), content_type)
    assert leftovers(tmp_path) == []


def test_a_stalled_body_times_out_and_leaves_nothing(tmp_path: Path) -> None:
    body, content_type = multipart_body(files={"file": ("p", os.urandom(3 << 20))})
    stalled = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(body[: 2 << 20], 65536):
            yield chunk
        stalled.set()
        await asyncio.Event().wait()  # the client sends nothing more, and does not hang up

    async def run() -> None:
        await uploads.receive_file(
            stalls(),
            content_type=content_type,
            directory=tmp_path / "tmp",
            label="sub",
            max_bytes=10**9,
            idle_timeout=0.3,
        )

    with pytest.raises(RequestTimeout) as caught:
        asyncio.run(run())
    assert stalled.is_set()  # bytes were stored before the stall
    assert caught.value.detail == uploads.IDLE.format(seconds=0.3)
    assert caught.value.status == 408 and caught.value.headers == {"Connection": "close"}
    assert leftovers(tmp_path) == []


# --- store_part: placement, duplicates, repeats, concurrency (SQLite and PostgreSQL) -----------


def test_one_upload_satisfies_every_entry_with_its_bytes(db: Database, settings: Settings) -> None:
    submission_id, parts = three_parts(db, settings)
    progress = store_part(db, settings, submission_id, "s_3.zip", parts[2])
    assert progress == uploads.PartProgress(completed=False, remaining=["s_2.zip"])
    for position in (0, 2):
        path = storage.part_path(settings, submission_id, position)
        assert path.read_bytes() == parts[0]
    again = store_part(db, settings, submission_id, "s_1.zip", parts[0])  # repeated: idempotent
    assert again.remaining == ["s_2.zip"]
    assert store_part(db, settings, submission_id, "s_2.zip", parts[1]).completed
    assert os.listdir(storage.tmp_dir(settings)) == []
    with db.session(read_only=True) as session:
        messages = session.scalars(
            select(SubmissionEvent.message).where(SubmissionEvent.submission_id == submission_id)
        ).all()
    assert sum("received" in m for m in messages) == 2  # the repeat adds no log line
    assert join_submission(settings=settings, db=db, submission_id=submission_id) == "uploaded"
    archive = storage.archive_path(settings, submission_id).read_bytes()
    assert archive == parts[0] + parts[1] + parts[0]


def test_wrong_bytes_are_refused(db: Database, settings: Settings) -> None:
    submission_id, parts = three_parts(db, settings)
    with pytest.raises(BadRequest, match="received 1001 bytes, the index says 1000"):
        store_part(db, settings, submission_id, "s_1.zip", parts[0] + b"x")
    with pytest.raises(BadRequest, match="MD5 of the received bytes"):
        store_part(db, settings, submission_id, "s_1.zip", bytes(1000))
    with pytest.raises(BadRequest, match="not in the index"):
        upload_target(db, settings, submission_id, "s_9.zip")
    with pytest.raises(BadRequest, match="invalid file name"):
        upload_target(db, settings, submission_id, "../s_1.zip")
    assert not storage.parts_dir(settings, submission_id).exists()
    assert os.listdir(storage.tmp_dir(settings)) == []


def test_a_submission_that_moved_on_takes_no_content(db: Database, settings: Settings) -> None:
    submission_id, parts = three_parts(db, settings)
    target = upload_target(db, settings, submission_id, "s_1.zip")
    with db.transaction() as session:
        session.get(Submission, submission_id).status = SubmissionStatus.CANCELLED
    received = received_file(settings, parts[0])
    with pytest.raises(Conflict, match="is cancelled"):
        uploads.store_part(db=db, settings=settings, target=target, received=received)
    received.discard()
    with pytest.raises(Conflict):
        upload_target(db, settings, submission_id, "s_1.zip")
    assert not storage.parts_dir(settings, submission_id).exists()


def test_last_two_parts_at_once_complete_exactly_once(db: Database, settings: Settings) -> None:
    submission_id, parts = three_parts(db, settings)
    barrier = threading.Barrier(2)
    results: list[uploads.PartProgress] = []
    errors: list[BaseException] = []

    def send(name: str, data: bytes) -> None:
        try:
            barrier.wait()
            results.append(store_part(db, settings, submission_id, name, data))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=send, args=("s_1.zip", parts[0])),
        threading.Thread(target=send, args=("s_2.zip", parts[1])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(r.completed for r in results) == [False, True]

    # Two joiners at once (two workers noticed completion): one wins, nothing doubles.
    outcomes: list[str | None] = []
    joiners = [
        threading.Thread(
            target=lambda: outcomes.append(
                join_submission(settings=settings, db=db, submission_id=submission_id)
            )
        )
        for _ in range(2)
    ]
    for thread in joiners:
        thread.start()
    for thread in joiners:
        thread.join(60)
    assert sorted(outcomes, key=str) == [None, "uploaded"] or outcomes == ["uploaded", None]
    with db.session(read_only=True) as session:
        uploaded = session.scalars(
            select(SubmissionEvent).where(
                SubmissionEvent.submission_id == submission_id,
                SubmissionEvent.status == SubmissionStatus.UPLOADED,
            )
        ).all()
    assert len(uploaded) == 1
