"""Join the parts of a complete upload into archive.zip, off the event loop, exactly once.

A join runs in a worker thread of the `Assembler` (never on the event loop). It holds the
submission's join lock (`db.cluster.named_lock`: an advisory lock on PostgreSQL, one joiner at a
time on every host; an flock on the submission's `.join.lock` on SQLite; dropped if the process
dies), copies the parts in index order into a temp file while
hashing, fsyncs it, and then, in one short transaction that locks the submission row, renames it
to archive.zip and sets the status (`uploaded`, or `invalid` when the MD5 differs) only if the
submission is still `uploading`. Parts are removed after that commit.

Failures: a join that cannot finish (a full disk, an I/O error) writes the reason to the
submission's log, keeps the parts and stays `uploading`: it is the platform's trouble, never the
participant's, and nothing acknowledged is dropped.

Recovery: a join interrupted by a crash or a failure leaves the submission `uploading` with every
part received. Each server process looks for such submissions at start-up and then every
`ZR_UPLOAD_RECOVERY_SECONDS`, and joins them; so does any later content/add for them (the client
re-sending a part) and `submissions rejoin`. The same periodic pass removes temp files of dead
processes in this host's own tmp folder (tempfiles.py; other hosts sweep theirs); start-up also
removes folders of deleted submissions, one host at a time (a named lock).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from zerospeech_api.db.cluster import named_lock
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Submission, SubmissionEvent, SubmissionPart, SubmissionStatus
from zerospeech_api.errors import InsufficientStorage, is_out_of_space
from zerospeech_api.files import fsync_dir
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage, tempfiles
from zerospeech_api.submissions.events import log_event, set_status

log = logging.getLogger("zerospeech_api.submissions.assembly")

COPY_CHUNK = 4 << 20
# A folder without a row is removed only when untouched for this long: whoever writes files
# before committing the row (or is about to) is never raced.
ORPHAN_MIN_AGE_SECONDS = 600
MD5_MISMATCH = "the joined archive's MD5 is {got}, the submission announced {want}"
PART_LOST = "part {name} was recorded but its file is missing: send it again"
JOIN_FAILED = "joining the parts failed: {reason}; the parts are kept and the join will be retried"
NO_DISK_SPACE = "not enough free disk space on the server"


class JoinFailed(Exception):
    """A join could not finish; its reason is in the submission's log, the parts are kept."""

    def __init__(self, message: str, *, out_of_space: bool) -> None:
        super().__init__(message)
        self.out_of_space = out_of_space


@contextlib.contextmanager
def join_lock(settings: Settings, db: Database, submission_id: str) -> Iterator[bool]:
    """Try to take the submission's join lock without waiting; yields whether we hold it (on
    SQLite, not when its folder does not exist: nothing was ever received, or it was deleted)."""
    path = storage.join_lock_path(settings, submission_id)
    with named_lock(db.engine, f"join:{submission_id}", lock_file=path, wait=False) as held:
        yield held


def _snapshot(db: Database, submission_id: str) -> tuple[str, list[SubmissionPart]] | None:
    """(announced MD5, parts) of an `uploading` submission whose parts are all received."""
    with db.session(read_only=True) as session:
        submission = session.get(Submission, submission_id)
        if submission is None or submission.status != SubmissionStatus.UPLOADING:
            return None
        parts = list(submission.parts)
        if not parts or any(p.received_at is None for p in parts):
            return None
        for part in parts:
            session.expunge(part)
        return submission.archive_hash, parts


def _copy_parts(
    settings: Settings, submission_id: str, parts: list[SubmissionPart], out_fd: int
) -> tuple[str, int]:
    md5 = hashlib.md5()
    size = 0
    buffer = bytearray(COPY_CHUNK)
    view = memoryview(buffer)
    with open(out_fd, "wb", closefd=False) as out:
        for part in parts:
            with open(storage.part_path(settings, submission_id, part.position), "rb") as src:
                while n := src.readinto(buffer):
                    out.write(view[:n])
                    md5.update(view[:n])
                    size += n
        out.flush()
        os.fsync(out_fd)
    return md5.hexdigest(), size


def _forget_lost_parts(db: Database, settings: Settings, submission_id: str) -> bool:
    """Mark parts whose file vanished as not received (so a re-send completes the upload)."""
    with db.transaction() as session:
        lost = [
            p
            for p in session.scalars(
                select(SubmissionPart).where(SubmissionPart.submission_id == submission_id)
            )
            if p.received_at is not None
            and not storage.part_path(settings, submission_id, p.position).is_file()
        ]
        for part in lost:
            part.received_at = None
            log_event(
                session=session,
                submission_id=submission_id,
                message=PART_LOST.format(name=part.filename),
            )
        return bool(lost)


def join_submission(*, settings: Settings, db: Database, submission_id: str) -> str | None:
    """Join a complete upload; returns the new status, or None if there was nothing to do
    (not complete, not uploading, or another joiner holds the lock). `JoinFailed` when it could
    not finish: the reason is in the submission's log and a later attempt may succeed."""
    with join_lock(settings, db, submission_id) as locked:
        if not locked:
            return None
        snapshot = _snapshot(db, submission_id)
        if snapshot is None:
            return None
        announced, parts = snapshot
        try:
            return _join(settings, db, submission_id, announced, parts)
        except Exception as exc:
            full = isinstance(exc, InsufficientStorage) or is_out_of_space(exc)
            message = JOIN_FAILED.format(reason=_reason(exc, full=full))
            _record_failure(db, submission_id, message)
            raise JoinFailed(message, out_of_space=full) from exc


def _join(
    settings: Settings,
    db: Database,
    submission_id: str,
    announced: str,
    parts: list[SubmissionPart],
) -> str | None:
    """Check for room, copy the parts into a locked temp file, then `_finish`."""
    try:
        size = sum(
            storage.part_path(settings, submission_id, p.position).stat().st_size for p in parts
        )
    except FileNotFoundError:
        _forget_lost_parts(db, settings, submission_id)
        return None
    # Checked first so a retry on a full disk costs nothing. No reserve: the reserve exists to
    # finish what was already accepted.
    storage.require_room(settings, size, reserve=0)
    fd, joined = tempfiles.create_locked(
        storage.tmp_dir(settings), f"{tempfiles.JOIN_PREFIX}{submission_id}-"
    )
    try:
        try:
            got, size = _copy_parts(settings, submission_id, parts, fd)
        except FileNotFoundError:
            _forget_lost_parts(db, settings, submission_id)
            return None
        return _finish(settings, db, submission_id, joined, got, announced, size, len(parts))
    finally:
        # Before anything else (a failure is recorded after this): frees the space it took.
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            joined.unlink()


def _reason(exc: Exception, *, full: bool) -> str:
    """What the participant may read: no paths, no internals."""
    if full:
        return NO_DISK_SPACE
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return f"internal error ({type(exc).__name__})"


def _record_failure(db: Database, submission_id: str, message: str) -> None:
    """Add `message` to the submission's log unless it is already its last line (retries on a
    full disk must not flood the log); best effort: the database may be on the full disk."""
    try:
        with db.transaction() as session:
            last = session.scalar(
                select(SubmissionEvent.message)
                .where(SubmissionEvent.submission_id == submission_id)
                .order_by(SubmissionEvent.at.desc(), SubmissionEvent.id.desc())
                .limit(1)
            )
            if last != message and session.get(Submission, submission_id) is not None:
                log_event(session=session, submission_id=submission_id, message=message)
    except Exception:
        log.exception("could not record the failed join of submission %s", submission_id)


def _finish(
    settings: Settings,
    db: Database,
    submission_id: str,
    joined: Path,
    got: str,
    announced: str,
    size: int,
    count: int,
) -> str | None:
    with db.transaction() as session:
        submission = session.scalar(
            select(Submission).where(Submission.id == submission_id).with_for_update()
        )
        if submission is None or submission.status != SubmissionStatus.UPLOADING:
            return None  # deleted or moved on meanwhile: discard our copy
        if got == announced:
            archive = storage.archive_path(settings, submission_id)
            os.replace(joined, archive)
            fsync_dir(archive.parent)
            submission.archive_size = size
            status = SubmissionStatus.UPLOADED
            reason = f"archive joined from {count} part(s) and verified ({size} bytes, MD5 {got})"
        else:
            status = SubmissionStatus.INVALID
            reason = MD5_MISMATCH.format(got=got, want=announced)
        set_status(session=session, submission=submission, status=status, reason=reason)
    # Committed: the parts are no longer needed (kept until now so a crash could re-join).
    shutil.rmtree(storage.parts_dir(settings, submission_id), ignore_errors=True)
    log.info("submission %s %s", submission_id, status)
    return status


def unjoined(*, session: Session) -> list[str]:
    """Ids of `uploading` submissions whose parts have all been received (a join is due)."""
    missing = exists().where(
        SubmissionPart.submission_id == Submission.id, SubmissionPart.received_at.is_(None)
    )
    return list(
        session.scalars(
            select(Submission.id).where(
                Submission.status == SubmissionStatus.UPLOADING,
                Submission.parts.any(),
                ~missing,
            )
        ).all()
    )


def sweep_tmp(settings: Settings, *, min_age: float = tempfiles.MIN_AGE_SECONDS) -> int:
    """Delete upload/join temp files left by dead processes (a live writer holds their lock)."""
    return tempfiles.sweep(
        storage.tmp_dir(settings), (tempfiles.UPLOAD_PREFIX, tempfiles.JOIN_PREFIX), min_age=min_age
    )


def sweep_orphans(
    *, settings: Settings, db: Database, min_age: float = ORPHAN_MIN_AGE_SECONDS
) -> list[str]:
    """Remove old folders of submissions that no longer exist (deleted, crash before cleanup);
    one process of one host at a time (the others skip it)."""
    root = storage.submissions_root(settings)
    if not root.is_dir():
        return []
    settings.node_dir.mkdir(parents=True, exist_ok=True)
    lock_file = settings.node_dir / ".sweep.lock"
    with named_lock(db.engine, "sweep:orphans", lock_file=lock_file, wait=False) as held:
        return _sweep_orphans(root, db, min_age) if held else []


def _sweep_orphans(root: Path, db: Database, min_age: float) -> list[str]:
    now = time.time()
    names = []
    for path in root.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and now - path.stat().st_mtime >= min_age:
                names.append(path.name)
    if not names:
        return []
    with db.session(read_only=True) as session:
        known = set(session.scalars(select(Submission.id).where(Submission.id.in_(names))).all())
    removed = []
    for name in names:
        if name not in known:
            shutil.rmtree(root / name, ignore_errors=True)
            removed.append(name)
    return removed


class Assembler:
    """Joins submissions in background threads and runs the recovery pass; one per app (so per
    gunicorn worker)."""

    def __init__(self, *, settings: Settings, db: Database, threads: int = 2) -> None:
        self.settings = settings
        self.db = db
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="zr-join")
        self._lock = threading.Lock()
        self._queued: set[str] = set()
        self._stop = threading.Event()
        self._recovery: threading.Thread | None = None

    def submit(self, submission_id: str) -> None:
        """Join soon (no-op if this submission is already waiting here)."""
        with self._lock:
            if submission_id in self._queued:
                return
            self._queued.add(submission_id)
        try:
            self._executor.submit(self._join, submission_id)
        except RuntimeError:  # shutting down: the next recovery pass will do it
            with self._lock:
                self._queued.discard(submission_id)

    def _join(self, submission_id: str) -> None:
        with self._lock:
            self._queued.discard(submission_id)
        try:
            join_submission(settings=self.settings, db=self.db, submission_id=submission_id)
        except JoinFailed as exc:
            # Expected platform trouble (a full disk) gets one line; anything else its traceback.
            cause = None if exc.out_of_space else exc.__cause__
            log.warning("submission %s: %s", submission_id, exc, exc_info=cause)
        except Exception:
            log.exception("joining submission %s failed; it will be retried", submission_id)

    def recover(self) -> None:
        """Clean up after dead processes and join what is due, now and then every
        `upload_recovery_seconds` until `close()` (in a background thread)."""
        if self._recovery is None:
            self._recovery = threading.Thread(
                target=self._recover_periodically, name="zr-recovery", daemon=True
            )
            self._recovery.start()

    def _recover_periodically(self) -> None:
        # Orphan folders come only from a crash mid-delete: once, at start-up, is enough.
        orphans = True
        while True:
            self._recover(orphans=orphans)
            orphans = False
            if self._stop.wait(self.settings.upload_recovery_seconds):
                return

    def _recover(self, *, orphans: bool) -> None:
        try:
            sweep_tmp(self.settings)
            if orphans:
                sweep_orphans(settings=self.settings, db=self.db)
            with self.db.session(read_only=True) as session:
                due = unjoined(session=session)
        except Exception:
            log.exception(
                "upload recovery failed; trying again in %ss", self.settings.upload_recovery_seconds
            )
            return
        for submission_id in due:
            log.info("joining submission %s (complete, not joined yet)", submission_id)
            self.submit(submission_id)

    def close(self) -> None:
        """Stop the recovery pass, finish the joins under way and queued (a graceful stop loses
        no work)."""
        self._stop.set()
        if self._recovery is not None:
            self._recovery.join()
        self._executor.shutdown(wait=True)
