"""Joining parts: order, verification, exactly-once, lost parts, recovery and clean-up."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time

import pytest
from sqlalchemy import select

from tests.helpers.disk import TempFileWriter
from tests.helpers.factories import events_of, status_of, store_part, three_parts
from tests.helpers.processes import wait_for
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Submission, SubmissionEvent, SubmissionPart, SubmissionStatus
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import assembly, storage


def complete_without_join(db: Database, settings: Settings) -> tuple[str, bytes]:
    """All parts received (as if the server died right before joining); returns the archive."""
    submission_id, parts = three_parts(db, settings)
    for name, data in zip(("s_3.zip", "s_2.zip"), (parts[2], parts[1]), strict=True):
        store_part(db, settings, submission_id, name, data)
    return submission_id, parts[0] + parts[1] + parts[2]


def test_join_in_index_order_then_parts_are_removed(db: Database, settings: Settings) -> None:
    submission_id, archive = complete_without_join(db, settings)
    assert assembly.join_submission(settings=settings, db=db, submission_id=submission_id) == (
        SubmissionStatus.UPLOADED
    )
    assert storage.archive_path(settings, submission_id).read_bytes() == archive
    assert not storage.parts_dir(settings, submission_id).exists()
    assert os.listdir(storage.tmp_dir(settings)) == []
    with db.session(read_only=True) as session:
        submission = session.get(Submission, submission_id)
        assert submission.archive_size == len(archive)
        last = session.scalars(
            select(SubmissionEvent).order_by(SubmissionEvent.id.desc()).limit(1)
        ).one()
        assert "verified" in last.message and last.status == "uploaded"
    # Nothing left to do: a second join is a no-op.
    assert assembly.join_submission(settings=settings, db=db, submission_id=submission_id) is None


def test_md5_mismatch_makes_it_invalid_with_the_reason(db: Database, settings: Settings) -> None:
    submission_id, archive = complete_without_join(db, settings)
    with db.transaction() as session:
        session.get(Submission, submission_id).archive_hash = "f" * 32
    result = assembly.join_submission(settings=settings, db=db, submission_id=submission_id)
    assert result == SubmissionStatus.INVALID
    assert not storage.archive_path(settings, submission_id).exists()
    with db.session(read_only=True) as session:
        last = session.scalars(select(SubmissionEvent).order_by(SubmissionEvent.id.desc())).first()
    assert last.message.endswith(
        assembly.MD5_MISMATCH.format(got=hashlib.md5(archive).hexdigest(), want="f" * 32)
    )


def test_incomplete_or_locked_is_left_alone(db: Database, settings: Settings) -> None:
    submission_id, parts = three_parts(db, settings)
    store_part(db, settings, submission_id, "s_1.zip", parts[0])
    assert assembly.join_submission(settings=settings, db=db, submission_id=submission_id) is None
    store_part(db, settings, submission_id, "s_2.zip", parts[1])
    with assembly.join_lock(settings, db, submission_id) as held:  # another joiner holds it
        assert held
        assert (
            assembly.join_submission(settings=settings, db=db, submission_id=submission_id) is None
        )
    assert status_of(db, submission_id) == "uploading"
    assert assembly.join_submission(settings=settings, db=db, submission_id=submission_id)


def test_a_lost_part_is_asked_for_again(db: Database, settings: Settings) -> None:
    submission_id, _ = complete_without_join(db, settings)
    storage.part_path(settings, submission_id, 1).unlink()
    assert assembly.join_submission(settings=settings, db=db, submission_id=submission_id) is None
    with db.session(read_only=True) as session:
        received = session.scalars(
            select(SubmissionPart.filename).where(
                SubmissionPart.submission_id == submission_id, SubmissionPart.received_at.is_(None)
            )
        ).all()
    assert received == ["s_2.zip"]
    assert os.listdir(storage.tmp_dir(settings)) == []


def test_deleted_during_join_leaves_no_archive(db: Database, settings: Settings) -> None:
    submission_id, _ = complete_without_join(db, settings)
    original = assembly._copy_parts

    def copy_then_delete(*args, **kwargs):
        result = original(*args, **kwargs)
        with db.transaction() as session:
            session.delete(session.get(Submission, submission_id))
        return result

    assembly._copy_parts = copy_then_delete  # type: ignore[assignment]
    try:
        assert (
            assembly.join_submission(settings=settings, db=db, submission_id=submission_id) is None
        )
    finally:
        assembly._copy_parts = original  # type: ignore[assignment]
    assert not storage.archive_path(settings, submission_id).exists()
    assert os.listdir(storage.tmp_dir(settings)) == []


def test_recovery_rejoins_and_cleans_up(db: Database, settings: Settings) -> None:
    due, archive = complete_without_join(db, settings)
    waiting, _ = three_parts(db, settings)
    with db.session(read_only=True) as session:
        assert assembly.unjoined(session=session) == [due]
    # Leftovers of a dead process: an orphan folder and stale temp files.
    orphan = storage.submission_dir(settings, "20200101-deadbeefdeadbeef")
    (orphan / "parts").mkdir(parents=True)
    fresh_orphan = storage.submission_dir(settings, "20200101-justcreatedrownext")
    fresh_orphan.mkdir()  # someone writes files before committing the row: left alone
    tmp = storage.tmp_dir(settings)
    stale = tmp / "join-x-1.tmp"
    stale.write_bytes(b"half an archive")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(orphan, (old, old))
    young = tmp / "upload-x-2.tmp"
    young.write_bytes(b"just created")
    live = tmp / "upload-x-3.tmp"
    live.write_bytes(b"being written")
    os.utime(live, (old, old))
    foreign = tmp / "someone-elses.tmp"
    foreign.write_bytes(b"not ours")
    os.utime(foreign, (old, old))

    with open(live, "rb") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)  # a live upload in another process holds its lock
        assembler = assembly.Assembler(settings=settings, db=db)
        assembler.recover()
        assembler.close()  # waits for the recovery and the joins it started
    assert status_of(db, due) == "uploaded"
    assert storage.archive_path(settings, due).read_bytes() == archive
    assert status_of(db, waiting) == "uploading"
    assert not orphan.exists()
    assert fresh_orphan.exists()
    assert sorted(p.name for p in tmp.iterdir()) == sorted([young.name, live.name, foreign.name])


def test_recovery_keeps_running_while_the_server_does(db: Database, settings: Settings) -> None:
    """Not only at start-up: later leftovers of dead processes and due joins are handled too."""
    tmp = storage.tmp_dir(settings)
    tmp.mkdir(parents=True, exist_ok=True)
    with TempFileWriter(tmp, "upload-early-") as early:
        early.kill()
    os.utime(early.path, (time.time() - 3600,) * 2)
    assembler = assembly.Assembler(
        settings=settings.model_copy(update={"upload_recovery_seconds": 0.1}), db=db
    )
    assembler.recover()
    try:
        wait_for(lambda: not early.path.exists(), what="the start-up pass")
        # A worker killed mid-upload, and a join that is due, after start-up.
        with TempFileWriter(tmp, "upload-late-") as late:
            late.kill()
        os.utime(late.path, (time.time() - 3600,) * 2)
        due, archive = complete_without_join(db, settings)
        wait_for(lambda: not late.path.exists(), what="a later pass to sweep")
        wait_for(lambda: status_of(db, due) == "uploaded", what="a later pass to join")
    finally:
        assembler.close()
    assert storage.archive_path(settings, due).read_bytes() == archive


def test_a_failed_join_is_logged_kept_and_retried(db: Database, settings: Settings) -> None:
    submission_id, archive = complete_without_join(db, settings)
    part = storage.part_path(settings, submission_id, 1)
    data = part.read_bytes()
    part.unlink()
    part.mkdir()  # an I/O error of the platform's (the participant did nothing wrong)
    message = assembly.JOIN_FAILED.format(reason=os.strerror(errno.EISDIR))
    with pytest.raises(assembly.JoinFailed, match=message) as failed:
        assembly.join_submission(settings=settings, db=db, submission_id=submission_id)
    assert not failed.value.out_of_space
    assert [e.message for e in events_of(db, submission_id)][-1] == message
    assert status_of(db, submission_id) == "uploading"
    assert os.listdir(storage.tmp_dir(settings)) == []
    part.rmdir()
    part.write_bytes(data)
    assert assembly.join_submission(settings=settings, db=db, submission_id=submission_id) == (
        "uploaded"
    )
    assert storage.archive_path(settings, submission_id).read_bytes() == archive
