"""Safe zip extraction: no absolute paths, `..`, links or device files; caps on size and count.

The archive is read with zipstream in bounded memory: the central directory is walked twice (all
checks first, then extraction), never held whole. Faults of the archive raise `UnpackError`
(the submission is `invalid`); a lack of disk space on the server raises `NoSpace` (a platform
fault): the unpacked size is bounded by the free space of the data disk minus a reserve, and a
real ENOSPC is reported the same way. On any error nothing is left in the destination.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TypeGuard

from zerospeech_api.submissions.zipstream import (
    BZIP2,
    DEFLATED,
    FLAG_ENCRYPTED,
    FLAG_PATCHED,
    FLAG_STRONG_ENCRYPTION,
    LZMA,
    STORED,
    Directory,
    Member,
    ZipFormatError,
    find_directory,
    members,
    read_chunks,
)

# Each file and folder also costs at least a block on disk: counted against the free space.
BLOCK = 4096
MAX_NAME_BYTES = 255  # NAME_MAX of Linux file systems
MAX_PATH_BYTES = 1024
MAX_DEPTH = 64
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# What the file system says about a path the archive asks for: the archive's fault.
PATH_ERRNOS = (
    errno.EEXIST,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ENAMETOOLONG,
    errno.EILSEQ,
    errno.EINVAL,
    errno.ELOOP,
)

# Messages (tests import them).
NOT_A_ZIP = "the archive is not a valid zip file"
ABSOLUTE_PATH = "absolute path in the archive"
PARENT_REFERENCE = "'..' in a path of the archive"
BAD_NAME = "unusable file name in the archive"
OVERLONG = (
    f"path too long in the archive (over {MAX_NAME_BYTES} bytes per name, {MAX_PATH_BYTES} in all)"
)
TOO_DEEP = f"path nested too deep in the archive (over {MAX_DEPTH} folders)"
PATH_CONFLICT = "a path of the archive cannot be created (a file and a folder of the same name?)"
LINK = "symbolic link in the archive"
SPECIAL_FILE = "device, fifo or socket in the archive"
ENCRYPTED = "encrypted file in the archive"
UNSUPPORTED = "unsupported compression in the archive"
DUPLICATE = "the same path appears twice in the archive"
TOO_MANY_FILES = "the archive has too many files"
TOO_LARGE = "the archive unpacks to too many bytes"
CORRUPT = "the archive is damaged"
STOPPED = "unpacking was interrupted"
NO_SPACE = "not enough free disk space on the server to unpack the archive"


class UnpackError(Exception):
    """The archive is unsafe or unusable; `reason` says why (the submission becomes invalid)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnpackInterrupted(Exception):
    """`should_stop` asked to stop (worker shutting down or lease lost): not the archive's fault."""


class NoSpace(Exception):
    """The server's disk cannot hold the unpacked archive: a platform fault, not the archive's."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class UnpackStats:
    files: int
    bytes: int


def safe_member_path(name: str) -> PurePosixPath:
    """The relative path of a zip member, or `UnpackError` if it could escape the folder."""
    if not name or "\x00" in name or any(ord(c) < 32 for c in name):
        raise UnpackError(f"{BAD_NAME}: {name[:200]!r}")
    # Zip names use '/', but some tools write '\\': treat both as separators.
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise UnpackError(f"{ABSOLUTE_PATH}: {name[:200]!r}")
    parts = [p for p in normalised.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnpackError(f"{PARENT_REFERENCE}: {name[:200]!r}")
    if len(parts) > MAX_DEPTH:
        raise UnpackError(f"{TOO_DEEP}: {name[:200]!r}")
    encoded = [p.encode("utf-8", "surrogatepass") for p in parts]
    if sum(len(p) + 1 for p in encoded) > MAX_PATH_BYTES or any(
        len(p) > MAX_NAME_BYTES for p in encoded
    ):
        raise UnpackError(f"{OVERLONG}: {name[:200]!r}")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _check_member(member: Member) -> PurePosixPath:
    path = safe_member_path(member.name)
    # Unix zips keep st_mode in the high 16 bits of external_attr; 0 means "not recorded".
    kind = stat.S_IFMT(member.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise UnpackError(f"{LINK}: {member.name!r}")
    if kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
        raise UnpackError(f"{SPECIAL_FILE}: {member.name!r}")
    if member.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION):
        raise UnpackError(f"{ENCRYPTED}: {member.name!r}")
    if member.flags & FLAG_PATCHED or member.method not in (STORED, DEFLATED, BZIP2, LZMA):
        raise UnpackError(f"{UNSUPPORTED}: {member.name!r} (method {member.method})")
    return path


def is_space_error(exc: BaseException) -> TypeGuard[OSError]:
    """True for ENOSPC/EDQUOT: the disk is full (the server's fault, never the archive's)."""
    return isinstance(exc, OSError) and exc.errno in SPACE_ERRNOS


@dataclass
class _Limits:
    """The caps of one extraction: participant's (files, bytes) and the server's (free space)."""

    max_files: int
    max_bytes: int
    room: int | None

    def check(self, *, files: int, size: int, disk: int, declared: bool) -> None:
        what = "declared" if declared else "unpacked"
        if files > self.max_files:
            raise UnpackError(f"{TOO_MANY_FILES}: more than {self.max_files} entries")
        if size > self.max_bytes:
            raise UnpackError(f"{TOO_LARGE}: over {self.max_bytes} bytes {what}")
        if self.room is not None and disk > self.room:
            raise NoSpace(f"{NO_SPACE}: over {max(0, self.room)} bytes {what}")


def unpack(
    archive: Path,
    destination: Path,
    *,
    max_bytes: int,
    max_files: int,
    room: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> UnpackStats:
    """Extract `archive` into the new folder `destination`; on any error nothing is left there.

    Sizes are counted on the bytes actually decompressed, never trusted from the headers. Over
    `max_bytes` or `max_files` the archive is at fault (`UnpackError`); needing more than
    `room` bytes of disk (the free space the server can spare) is the server's (`NoSpace`).
    """
    destination = Path(destination)
    if destination.exists():
        shutil.rmtree(destination)
    partial = destination.with_name(destination.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        partial.mkdir(parents=True)
        limits = _Limits(max_files=max_files, max_bytes=max_bytes, room=room)
        stats = _extract(archive, partial, limits, should_stop)
        os.replace(partial, destination)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if is_space_error(exc):
            raise NoSpace(f"{NO_SPACE}: {exc.strerror or exc}") from None
        raise
    return stats


def _extract(
    archive: Path, root: Path, limits: _Limits, should_stop: Callable[[], bool] | None
) -> UnpackStats:
    with open(archive, "rb") as handle:
        try:
            directory = find_directory(handle)
        except ZipFormatError as exc:
            raise UnpackError(f"{NOT_A_ZIP} ({exc})") from None
        if directory.declared_entries > limits.max_files:
            raise UnpackError(
                f"{TOO_MANY_FILES}: {directory.declared_entries} entries, limit {limits.max_files}"
            )
        try:
            # First every entry is checked (count, names, kinds, declared sizes), then extracted.
            entries = size = disk = 0
            for member in members(handle, directory):
                _check_member(member)
                entries += 1
                size += member.size
                disk += member.size + BLOCK
                limits.check(files=entries, size=size, disk=disk, declared=True)
            return _write_all(handle, directory, root, limits, should_stop)
        except ZipFormatError as exc:
            raise UnpackError(f"{CORRUPT}: {exc}") from None


def _write_all(
    handle: BinaryIO,
    directory: Directory,
    root: Path,
    limits: _Limits,
    should_stop: Callable[[], bool] | None,
) -> UnpackStats:
    root_resolved = root.resolve()
    files = size = disk = 0
    for member in members(handle, directory):
        if should_stop is not None and should_stop():
            raise UnpackInterrupted(STOPPED)
        relative = _check_member(member)
        target = root / relative
        disk += BLOCK
        try:
            # Belt and braces: the cleaned relative path must stay inside the folder.
            if not target.resolve().is_relative_to(root_resolved):
                raise UnpackError(f"{PARENT_REFERENCE}: {member.name!r}")
            if member.is_dir() or str(relative) == ".":
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
                continue
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if not target.parent.resolve().is_relative_to(root_resolved):
                raise UnpackError(f"{LINK}: {member.name!r}")
            files += 1
            written = _copy_member(handle, member, target, limits, size, disk, should_stop)
        except OSError as exc:
            if exc.errno in PATH_ERRNOS:
                raise UnpackError(f"{PATH_CONFLICT}: {member.name!r}") from None
            raise
        size += written
        disk += written
    return UnpackStats(files=files, bytes=size)


def _copy_member(
    handle: BinaryIO,
    member: Member,
    target: Path,
    limits: _Limits,
    size: int,
    disk: int,
    should_stop: Callable[[], bool] | None,
) -> int:
    """Write one member; returns its actual size (checked against the limits as it grows)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except FileExistsError:
        raise UnpackError(f"{DUPLICATE}: {member.name!r}") from None
    written = 0
    with os.fdopen(fd, "wb") as out:
        for chunk in read_chunks(handle, member):
            written += len(chunk)
            limits.check(files=0, size=size + written, disk=disk + written, declared=False)
            out.write(chunk)
            if should_stop is not None and should_stop():
                raise UnpackInterrupted(STOPPED)
    return written


def read_member(archive: Path, name: str, *, max_bytes: int) -> bytes | None:
    """One member's bytes straight from the archive (None if absent); same safety rules."""
    wanted = safe_member_path(name)
    try:
        with open(archive, "rb") as handle:
            for member in members(handle, find_directory(handle)):
                if member.is_dir():
                    continue
                try:
                    path = _check_member(member)
                except UnpackError:
                    continue
                if path != wanted:
                    continue
                data = bytearray()
                for chunk in read_chunks(handle, member):
                    data += chunk
                    if len(data) > max_bytes:
                        raise UnpackError(f"{TOO_LARGE}: {name!r} is over {max_bytes} bytes")
                return bytes(data)
    except (ZipFormatError, OSError):
        return None
    return None
