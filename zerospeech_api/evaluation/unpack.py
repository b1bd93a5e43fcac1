"""Safe zip extraction: no absolute paths, `..`, links or device files; caps on size and count."""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CHUNK = 1024 * 1024

# Messages (tests import them).
NOT_A_ZIP = "the archive is not a valid zip file"
ABSOLUTE_PATH = "absolute path in the archive"
PARENT_REFERENCE = "'..' in a path of the archive"
BAD_NAME = "unusable file name in the archive"
LINK = "symbolic link in the archive"
SPECIAL_FILE = "device, fifo or socket in the archive"
ENCRYPTED = "encrypted file in the archive"
DUPLICATE = "the same path appears twice in the archive"
TOO_MANY_FILES = "the archive has too many files"
TOO_LARGE = "the archive unpacks to too many bytes"
CORRUPT = "the archive is damaged"
STOPPED = "unpacking was interrupted"


class UnpackError(Exception):
    """The archive is unsafe or unusable; `reason` says why (the submission becomes invalid)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnpackInterrupted(Exception):
    """`should_stop` asked to stop (worker shutting down or lease lost): not the archive's fault."""


@dataclass(frozen=True)
class UnpackStats:
    files: int
    bytes: int


def safe_member_path(name: str) -> PurePosixPath:
    """The relative path of a zip member, or `UnpackError` if it could escape the folder."""
    if not name or "\x00" in name or any(ord(c) < 32 for c in name):
        raise UnpackError(f"{BAD_NAME}: {name!r}")
    # Zip names use '/', but some tools write '\\': treat both as separators.
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        raise UnpackError(f"{ABSOLUTE_PATH}: {name!r}")
    parts = [p for p in normalised.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnpackError(f"{PARENT_REFERENCE}: {name!r}")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _file_type(info: zipfile.ZipInfo) -> int:
    # Unix zips keep st_mode in the high 16 bits of external_attr; 0 means "not recorded".
    return stat.S_IFMT(info.external_attr >> 16)


def _check_member(info: zipfile.ZipInfo) -> PurePosixPath:
    path = safe_member_path(info.filename)
    kind = _file_type(info)
    if kind == stat.S_IFLNK:
        raise UnpackError(f"{LINK}: {info.filename!r}")
    if kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
        raise UnpackError(f"{SPECIAL_FILE}: {info.filename!r}")
    if info.flag_bits & 0x1:
        raise UnpackError(f"{ENCRYPTED}: {info.filename!r}")
    return path


def unpack(
    archive: Path,
    destination: Path,
    *,
    max_bytes: int,
    max_files: int,
    should_stop: Callable[[], bool] | None = None,
) -> UnpackStats:
    """Extract `archive` into the new folder `destination`; on any error nothing is left there.

    Sizes are counted on the bytes actually decompressed, never trusted from the headers.
    """
    destination = Path(destination)
    if destination.exists():
        shutil.rmtree(destination)
    partial = destination.with_name(destination.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        stats = _extract(archive, partial, max_bytes, max_files, should_stop)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    os.replace(partial, destination)
    return stats


def _extract(
    archive: Path,
    root: Path,
    max_bytes: int,
    max_files: int,
    should_stop: Callable[[], bool] | None,
) -> UnpackStats:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnpackError(f"{NOT_A_ZIP} ({type(exc).__name__})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_files:
            raise UnpackError(f"{TOO_MANY_FILES}: {len(infos)} entries, limit {max_files}")
        # Cheap early refusal from the headers; the real check counts actual bytes below.
        declared = sum(info.file_size for info in infos)
        if declared > max_bytes:
            raise UnpackError(f"{TOO_LARGE}: {declared} bytes declared, limit {max_bytes}")
        checked = [(info, _check_member(info)) for info in infos]
        root_resolved = root.resolve()
        total = 0
        files = 0
        for info, relative in checked:
            if should_stop is not None and should_stop():
                raise UnpackInterrupted(STOPPED)
            target = root / relative
            # Belt and braces: the cleaned relative path must stay inside the folder.
            if not target.resolve().is_relative_to(root_resolved):
                raise UnpackError(f"{PARENT_REFERENCE}: {info.filename!r}")
            if info.is_dir() or str(relative) == ".":
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
                continue
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if not target.parent.resolve().is_relative_to(root_resolved):
                raise UnpackError(f"{LINK}: {info.filename!r}")
            files += 1
            total = _copy_member(zf, info, target, total, max_bytes, should_stop)
        return UnpackStats(files=files, bytes=total)


def _copy_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    target: Path,
    total: int,
    max_bytes: int,
    should_stop: Callable[[], bool] | None,
) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o644)
    except FileExistsError:
        raise UnpackError(f"{DUPLICATE}: {info.filename!r}") from None
    try:
        with os.fdopen(fd, "wb") as out, zf.open(info) as source:
            while True:
                chunk = source.read(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise UnpackError(f"{TOO_LARGE}: more than {max_bytes} bytes")
                out.write(chunk)
                if should_stop is not None and should_stop():
                    raise UnpackInterrupted(STOPPED)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise UnpackError(f"{CORRUPT}: {info.filename!r} ({type(exc).__name__})") from None
    except RuntimeError as exc:  # zipfile raises RuntimeError for encrypted members
        raise UnpackError(f"{CORRUPT}: {info.filename!r} ({exc})") from None
    return total


def read_member(archive: Path, name: str, *, max_bytes: int) -> bytes | None:
    """One member's bytes straight from the archive (None if absent); same safety rules."""
    wanted = safe_member_path(name)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                try:
                    path = _check_member(info)
                except UnpackError:
                    continue
                if path != wanted:
                    continue
                with zf.open(info) as source:
                    data = source.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise UnpackError(f"{TOO_LARGE}: {name!r} is over {max_bytes} bytes")
                return data
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError):
        return None
    return None
