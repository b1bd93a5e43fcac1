"""Receive one part of an upload.

The `file` field of a multipart/form-data body is streamed to a temp file in <data>/tmp in
bounded memory (python-multipart's streaming parser straight on the request's byte stream; disk
writes and MD5 run in a worker thread, one batch in flight while the next is received). The part
is then checked against its index entry and, in one short transaction that locks the submission
row, renamed into `parts/<position>.part` (atomically, after fsync) and recorded. Only then is it
acknowledged. No database transaction is open while bytes stream.

Resources: a part is refused (507) before its body is read when the disk cannot take it plus
`ZR_UPLOAD_RESERVE_BYTES`; a full disk met anyway while writing is a 507 too (the app's handler
maps ENOSPC wherever it happens) and the temp file goes. A body that stalls for
`ZR_UPLOAD_IDLE_TIMEOUT_SECONDS` is aborted with 408, so a silent client holds nothing for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import secrets
import shutil
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import select
from sqlalchemy.orm import Session

from zerospeech_api.benchmarks.service import archive_limit
from zerospeech_api.db.cluster import db_now
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Submission, SubmissionPart, SubmissionStatus, User
from zerospeech_api.errors import BadRequest, Conflict, NotFound, RequestTimeout
from zerospeech_api.files import fsync_dir
from zerospeech_api.security.sessions import authenticate
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage, tempfiles
from zerospeech_api.submissions.events import log_event
from zerospeech_api.submissions.service import (
    NO_SUBMISSION,
    REQUEST_OVERHEAD,
    get_submission,
    owned_submission,
)

if TYPE_CHECKING:
    # python_multipart declares its callback types for type checkers only; assembly imports
    # this module.
    from python_multipart.multipart import MultipartCallbacks

    from zerospeech_api.submissions.assembly import Assembler

# Messages (tests import them).
NOT_UPLOADING = "submission {id} is {status}: it accepts no more content"
NOT_IN_INDEX = "part {name!r} is not in the index of submission {id}"
NOT_MULTIPART = "send the part as multipart/form-data with one file field named `file`"
NO_FILE_FIELD = "the request has no file field named `file`"
EXTRA_FIELD = "unexpected form field {name!r}: send exactly one file field named `file`"
MALFORMED = "malformed multipart/form-data body"
PART_TOO_BIG = "part {name!r} is larger than its index entry ({size} bytes): discarded"
ARCHIVE_TOO_BIG = "the archive is larger than this benchmark accepts ({size} bytes): discarded"
DECLARED_TOO_BIG = (
    "Content-Length {length} is too large for part {name!r} ({size} bytes in the index)"
)
WRONG_SIZE = "part {name!r}: received {got} bytes, the index says {want}: discarded"
WRONG_HASH = "part {name!r}: MD5 of the received bytes is {got}, the index says {want}: discarded"
IDLE = "no data received for {seconds:g} seconds: upload aborted and discarded; send it again"

log = logging.getLogger("zerospeech_api.submissions.uploads")

FLUSH_BYTES = 1 << 20  # hand the disk + MD5 thread 1 MiB at a time
# Start writing back to disk while the rest streams in, so the fsync before the
# acknowledgement has little left to do (it would otherwise stall the end of every part).
SYNC_EVERY = 16 << 20


@dataclass(frozen=True)
class PartEntry:
    position: int
    filename: str
    size: int | None  # None: the whole archive of a single-part upload
    md5: str


@dataclass(frozen=True)
class UploadTarget:
    """What a content/add request may deliver, decided before its body is read."""

    submission_id: str
    entry: PartEntry
    max_bytes: int  # the file field may not be larger than this

    @property
    def too_big_message(self) -> str:
        if self.entry.size is None:
            return ARCHIVE_TOO_BIG.format(size=self.max_bytes)
        return PART_TOO_BIG.format(name=self.entry.filename, size=self.entry.size)


def plan_upload(
    *, session: Session, settings: Settings, submission_id: str, user: User, part_name: str
) -> UploadTarget:
    """Check the request before reading its body: 404 unknown, 403 someone else's, 409 not
    uploading, 400 unsafe name or a name not in the index (names come from the index only)."""
    submission = owned_submission(session=session, submission_id=submission_id, user=user)
    if submission.status != SubmissionStatus.UPLOADING:
        raise Conflict(NOT_UPLOADING.format(id=submission.id, status=submission.status))
    storage.check_name(part_name)
    part = next((p for p in submission.parts if p.filename == part_name), None)
    if part is None:
        raise BadRequest(NOT_IN_INDEX.format(name=part_name, id=submission.id))
    if part.size is None:
        max_bytes = min(archive_limit(submission.benchmark, settings), settings.max_request_bytes)
    else:
        max_bytes = part.size
    return UploadTarget(
        submission_id=submission.id,
        entry=PartEntry(part.position, part.filename, part.size, part.md5),
        max_bytes=max_bytes,
    )


def upload_target(
    *,
    db: Database,
    settings: Settings,
    token: str,
    submission_id: str,
    part_name: str,
    content_length: str | None,
) -> UploadTarget:
    """Authenticate and authorise a content/add before its body is read, in a short read-only
    session of its own (no transaction may stay open while the body streams)."""
    with db.session(read_only=True) as session:
        user, _ = authenticate(session=session, settings=settings, token=token)
        target = plan_upload(
            session=session,
            settings=settings,
            submission_id=submission_id,
            user=user,
            part_name=part_name,
        )
    check_declared_length(target, content_length)
    return target


def check_room(settings: Settings, target: UploadTarget, content_length: str | None) -> None:
    """507 before reading when the disk cannot take the part and still keep the reserve (a
    single-part upload's size is its Content-Length, when it sends one)."""
    needed = target.entry.size
    if needed is None:
        needed = int(content_length) if content_length and content_length.isdigit() else 0
    storage.require_room(settings, needed, reserve=settings.upload_reserve_bytes)


def check_declared_length(target: UploadTarget, content_length: str | None) -> None:
    """Refuse before reading when Content-Length cannot fit the announced part size."""
    if target.entry.size is None or content_length is None or not content_length.isdigit():
        return
    if int(content_length) > target.entry.size + REQUEST_OVERHEAD:
        raise BadRequest(
            DECLARED_TOO_BIG.format(
                length=content_length, name=target.entry.filename, size=target.entry.size
            )
        )


class ReceivedFile:
    """A temp file being (or having been) written, with its size and MD5.

    The file is flock'ed while this object is open, so the periodic sweep (tempfiles.py) can
    tell a live upload from one left behind by a dead process.
    """

    def __init__(self, directory: Path, label: str) -> None:
        fd, self.path = tempfiles.create_locked(directory, f"{tempfiles.UPLOAD_PREFIX}{label}-")
        self._file = os.fdopen(fd, "wb")
        self._lock = threading.Lock()
        self._md5 = hashlib.md5()
        self.size = 0  # bytes written to disk so far
        self.unsynced = 0  # bytes written since the last background sync started
        self.md5 = ""
        self.closed = False
        # A failed write (a full disk): kept, not raised, so the caller can drain the body
        # first and the client reads the answer instead of a reset connection.
        self.failure: OSError | None = None

    def write(self, views: list[memoryview]) -> None:
        """Append and hash (runs in a worker thread; calls never overlap)."""
        with self._lock:
            if self.closed or self.failure is not None:
                return
            try:
                for view in views:
                    self._file.write(view)
                    self._md5.update(view)
                    self.size += len(view)
                    self.unsynced += len(view)
            except OSError as exc:
                self.failure = exc

    def sync_some(self) -> None:
        """fdatasync what is written so far, concurrently with further writes (own fd)."""
        with self._lock:
            if self.closed or self.failure is not None:
                return
            fd = os.dup(self._file.fileno())
            self.unsynced = 0
        try:
            os.fdatasync(fd)
        except OSError as exc:
            self.failure = exc
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Flush, fsync (a part is durable before it is acknowledged) and keep the lock."""
        with self._lock:
            self._file.flush()
            os.fsync(self._file.fileno())
            self.md5 = self._md5.hexdigest()

    def discard(self) -> None:
        """Close and delete the temp file if it is still there (idempotent)."""
        with contextlib.suppress(OSError):  # closing flushes, which fails again on a full disk
            self.release()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def release(self) -> None:
        """Close the file (and its lock) after it was moved into place."""
        with self._lock:
            if not self.closed:
                self.closed = True
                self._file.close()


class _FormReader:
    """Callbacks for python-multipart: pick out the one `file` field, count and batch its data."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.batch: list[memoryview] = []
        self.batch_bytes = 0
        self.seen = 0  # file bytes seen so far
        self.error: BadRequest | None = None
        self.too_big = False
        self.in_file = False
        self.file_fields = 0
        self.finished = False
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def fail(self, error: BadRequest) -> None:
        if self.error is None:
            self.error = error

    def on_part_begin(self) -> None:
        self._headers = {}
        self.in_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode("latin-1")
        if disposition != b"form-data" or name != "file" or b"filename" not in options:
            self.fail(BadRequest(EXTRA_FIELD.format(name=name[:100])))
            return
        self.file_fields += 1
        if self.file_fields > 1:
            self.fail(BadRequest(EXTRA_FIELD.format(name=name)))
            return
        self.in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self.in_file or self.error is not None:
            return
        self.seen += end - start
        if self.seen > self.max_bytes:
            self.too_big = True
            self.in_file = False
            return
        self.batch.append(memoryview(data)[start:end])
        self.batch_bytes += end - start

    def on_part_end(self) -> None:
        self.in_file = False

    def on_end(self) -> None:
        self.finished = True

    def take(self) -> list[memoryview]:
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        return batch


def _boundary(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary", b"")
    if kind != b"multipart/form-data" or not boundary or len(boundary) > 200:
        raise BadRequest(NOT_MULTIPART)
    return boundary


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it


async def _next_chunk(chunks: AsyncIterator[bytes], seconds: float) -> bytes | None:
    """The next chunk (None at the end), or `RequestTimeout` when none comes for `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await anext(chunks)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise RequestTimeout(IDLE.format(seconds=seconds)) from None


async def receive_file(
    chunks: AsyncIterator[bytes],
    *,
    content_type: str | None,
    directory: Path,
    label: str,
    max_bytes: int,
    too_big_message: str = "the file is too large: discarded",
    idle_timeout: float = 120,
) -> ReceivedFile:
    """Stream the `file` field to a new temp file; 400 (after draining the body, so the client
    reads the answer) on a malformed body, extra fields, or more than `max_bytes` of file data;
    408 when no bytes arrive for `idle_timeout` seconds. On any error nothing stays on disk."""
    boundary = _boundary(content_type)
    loop = asyncio.get_running_loop()
    reader = _FormReader(max_bytes)
    parser = MultipartParser(boundary, reader.callbacks())
    received = ReceivedFile(directory, label)
    pending: asyncio.Future[None] | None = None
    syncing: asyncio.Future[None] | None = None
    done = False
    chunks = aiter(chunks)
    try:
        # Only the wait for the client is timed (never our own disk writes).
        while (chunk := await _next_chunk(chunks, idle_timeout)) is not None:
            if reader.error is not None or reader.too_big or received.failure is not None:
                if not received.closed:
                    received.discard()  # stop storing at once; drain the rest of the body
                continue
            try:
                parser.write(chunk)
            except FormParserError:
                reader.fail(BadRequest(MALFORMED))
                continue
            if reader.batch_bytes >= FLUSH_BYTES:
                if pending is not None:
                    await pending
                pending = loop.run_in_executor(None, received.write, reader.take())
                if received.unsynced >= SYNC_EVERY and (syncing is None or syncing.done()):
                    syncing = loop.run_in_executor(None, received.sync_some)
        if pending is not None:
            await pending
            pending = None
        if syncing is not None:
            await syncing
            syncing = None
        if received.failure is not None:
            raise received.failure  # a full disk is a 507 (the app's handler), else a 500
        if reader.too_big:
            raise BadRequest(too_big_message)
        if reader.error is not None:
            raise reader.error
        try:
            parser.finalize()
        except FormParserError:
            raise BadRequest(MALFORMED) from None
        if not reader.finished:
            raise BadRequest(MALFORMED)
        if reader.file_fields == 0:
            raise BadRequest(NO_FILE_FIELD)
        await loop.run_in_executor(None, _finish, received, reader.take())
        done = True
        return received
    finally:
        if not done:
            for future in (pending, syncing):
                if future is not None:
                    future.add_done_callback(_consume)
            received.discard()


def _finish(received: ReceivedFile, tail: list[memoryview]) -> None:
    received.write(tail)
    if received.failure is not None:
        raise received.failure
    received.finish()


@dataclass(frozen=True)
class PartProgress:
    completed: bool
    remaining: list[str]


def verify(target: UploadTarget, received: ReceivedFile) -> None:
    """400 unless the bytes match the index entry (size when known, and MD5)."""
    entry = target.entry
    if entry.size is not None and received.size != entry.size:
        raise BadRequest(WRONG_SIZE.format(name=entry.filename, got=received.size, want=entry.size))
    if received.md5 != entry.md5:
        raise BadRequest(WRONG_HASH.format(name=entry.filename, got=received.md5, want=entry.md5))


def place(source: Path, targets: list[Path]) -> None:
    """Make every target a durable copy of `source` (hard links; the last one is a rename);
    each target appears atomically, complete or not at all."""
    for target in targets[:-1]:
        staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        try:
            try:
                os.link(source, staging)
            except OSError:
                shutil.copyfile(source, staging)
                with open(staging, "rb+") as handle:
                    os.fsync(handle.fileno())
            os.replace(staging, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                staging.unlink()  # e.g. the disk filled up during the copy: leave no half file
            raise
    os.replace(source, targets[-1])
    fsync_dir(targets[-1].parent)


def store_part(
    *, db: Database, settings: Settings, target: UploadTarget, received: ReceivedFile
) -> PartProgress:
    """Move a verified part into place and record it, in one short transaction that locks the
    submission row: concurrent parts of one submission serialise here, so completion is seen
    exactly when the last part is recorded. One upload satisfies every entry with its bytes."""
    with db.transaction() as session:
        submission = session.scalar(
            select(Submission).where(Submission.id == target.submission_id).with_for_update()
        )
        if submission is None:
            raise NotFound(NO_SUBMISSION.format(id=target.submission_id))
        if submission.status != SubmissionStatus.UPLOADING:
            raise Conflict(NOT_UPLOADING.format(id=submission.id, status=submission.status))
        parts = session.scalars(
            select(SubmissionPart)
            .where(SubmissionPart.submission_id == submission.id)
            .order_by(SubmissionPart.position)
        ).all()
        same = [
            p
            for p in parts
            if p.md5 == received.md5 and (p.size is None or p.size == received.size)
        ]
        directory = storage.parts_dir(settings, submission.id)
        directory.mkdir(parents=True, exist_ok=True)
        place(received.path, [storage.part_path(settings, submission.id, p.position) for p in same])
        now = db_now(session)  # the database's clock: the age of uploads is read with it
        fresh = [p for p in same if p.received_at is None]
        for part in fresh:
            part.received_at = now
        remaining = [p.filename for p in parts if p.received_at is None]
        if fresh:
            names = ", ".join(p.filename for p in fresh)
            log_event(
                session=session,
                submission_id=submission.id,
                message=f"received {names} ({received.size} bytes, MD5 {received.md5}); "
                f"{len(remaining)} part(s) to go",
            )
    received.release()
    return PartProgress(completed=not remaining, remaining=remaining)


async def add_part(
    *,
    db: Database,
    settings: Settings,
    assembler: Assembler,
    target: UploadTarget,
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    content_length: str | None,
) -> PartProgress:
    """The content/add use case: check the room, stream the body to a temp file, verify it
    against the index, store it; the last part hands the submission to the assembler."""
    check_room(settings, target, content_length)
    try:
        received = await receive_file(
            chunks,
            content_type=content_type,
            directory=storage.tmp_dir(settings),
            label=target.submission_id,
            max_bytes=target.max_bytes,
            too_big_message=target.too_big_message,
            idle_timeout=settings.upload_idle_timeout_seconds,
        )
    except RequestTimeout:
        log.info("upload of %s stalled: aborted", target.entry.filename)
        raise
    try:
        verify(target, received)
        # The request's thread pool (the one sync routes use), as the route used to.
        progress = await anyio.to_thread.run_sync(
            functools.partial(
                store_part, db=db, settings=settings, target=target, received=received
            )
        )
    finally:
        await anyio.to_thread.run_sync(received.discard)
    if progress.completed:
        assembler.submit(target.submission_id)
    return progress


def content_status(*, session: Session, submission_id: str) -> dict[str, str]:
    """`{submission_id, status}` (public: the zrc client asks without a token)."""
    submission = get_submission(session=session, submission_id=submission_id)
    return {"submission_id": submission.id, "status": submission.status}
