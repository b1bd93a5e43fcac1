"""Online backup: a consistent copy of the SQLite database and a manifest of the data folder.

The copy uses SQLite's backup API on a connection of the running configuration, so it is a
consistent snapshot while the API and workers keep reading and writing (WAL). The manifest lists
every other file of the data folder with its size, mtime and sha256, so a copy of the folder
(rsync, snapshot) can be checked against it later. PostgreSQL is backed up with pg_dump.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NotRequired, TypedDict

from sqlalchemy.engine import make_url

from zerospeech_api import __version__
from zerospeech_api.db.engine import Database
from zerospeech_api.settings import Settings

MANIFEST_NAME = "manifest.json"
DATABASE_NAME = "zerospeech.db"
# Not data: sockets and pids of the running supervisord, and the live database files (copied
# through the backup API instead).
SKIPPED_DIRS = {"run"}
# In each host's node folder (<data>/nodes/<node>/): its runtime files and temp files.
SKIPPED_NODE_DIRS = {"run", "tmp"}
CHUNK = 1 << 20

PG_DUMP_HINT = (
    "the database is PostgreSQL: this command does not copy it; run "
    "`pg_dump --format=custom --file=zerospeech.dump DBNAME` (it is consistent while the "
    "API runs) and keep it with this manifest"
)


class ManifestFile(TypedDict):
    """One file of the data folder in manifest.json (sha256 unless made without checksums)."""

    path: str
    size: int
    mtime: str
    sha256: NotRequired[str]


class BackupError(Exception):
    """The backup could not be made; the message says why."""


@dataclass(frozen=True)
class BackupResult:
    folder: Path
    database_copied: bool
    files: int
    total_bytes: int


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, None for other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(parsed.database).resolve()


def copy_sqlite(db: Database, target: Path) -> None:
    """Copy the database to `target` with SQLite's online backup API, then check the copy."""
    tmp = target.with_name(target.name + ".part")
    tmp.unlink(missing_ok=True)
    raw = db.engine.raw_connection()
    try:
        source = raw.driver_connection
        if not isinstance(source, sqlite3.Connection):
            raise BackupError(f"not a SQLite connection: {type(source).__name__}")
        with closing(sqlite3.connect(tmp)) as copy:
            # pages=-1: one step under one read transaction, hence one consistent snapshot.
            source.backup(copy, pages=-1)
            (verdict,) = copy.execute("PRAGMA integrity_check").fetchone()
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        if verdict != "ok":
            raise BackupError(f"integrity check of the copy failed: {verdict}")
    finally:
        raw.close()
    os.replace(tmp, target)


def _data_files(data_dir: Path, skip: set[Path]) -> Iterator[Path]:
    for folder, dirs, files in os.walk(data_dir):
        here = Path(folder)
        skipped = (
            SKIPPED_DIRS
            if here == data_dir
            else SKIPPED_NODE_DIRS
            if here.parent == data_dir / "nodes"
            else set()
        )
        dirs[:] = sorted(d for d in dirs if d not in skipped)
        for name in sorted(files):
            path = here / name
            if path not in skip and path.is_file() and not path.is_symlink():
                yield path


def _sha256(path: Path, progress: Callable[[int], None]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            progress(len(chunk))
    return digest.hexdigest()


def data_manifest(
    data_dir: Path,
    *,
    skip: set[Path],
    checksums: bool = True,
    progress: Callable[[int], None] = lambda _n: None,
) -> list[ManifestFile]:
    """One entry per file of the data folder: relative path, size, mtime, sha256."""
    entries: list[ManifestFile] = []
    for path in _data_files(data_dir, skip):
        stat = path.stat()
        entry: ManifestFile = {
            "path": path.relative_to(data_dir).as_posix(),
            "size": stat.st_size,
            "mtime": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(),
        }
        if checksums:
            entry["sha256"] = _sha256(path, progress)
        entries.append(entry)
    return entries


def data_size(data_dir: Path, skip: set[Path]) -> int:
    """Bytes to read for the checksums (for a progress bar)."""
    return sum(p.stat().st_size for p in _data_files(data_dir, skip))


def backup(
    settings: Settings,
    target_dir: Path,
    *,
    checksums: bool = True,
    progress: Callable[[int], None] = lambda _n: None,
) -> BackupResult:
    """Write <target>/zerospeech-backup-<UTC time>/ with the database copy and manifest.json."""
    data_dir = settings.data_dir.resolve()
    if not data_dir.is_dir():
        raise BackupError(f"data folder {data_dir} does not exist")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = target_dir.resolve() / f"zerospeech-backup-{stamp}"
    if folder.exists():
        raise BackupError(f"{folder} already exists")
    if folder == data_dir or data_dir in folder.parents:
        raise BackupError("the backup folder must be outside the data folder")
    work = folder.with_name(folder.name + ".part")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    db_file = sqlite_path(settings.database)
    skip: set[Path] = set()
    if db_file is not None:
        skip = {db_file, Path(f"{db_file}-wal"), Path(f"{db_file}-shm"), Path(f"{db_file}-journal")}
        db = Database(settings.database)
        try:
            copy_sqlite(db, work / DATABASE_NAME)
        finally:
            db.dispose()
    files = data_manifest(data_dir, skip=skip, checksums=checksums, progress=progress)
    manifest = {
        "created": datetime.now(UTC).isoformat(),
        "version": __version__,
        "data_dir": str(data_dir),
        "database": {
            "backend": "sqlite" if db_file else "postgresql",
            "copied": db_file is not None,
            "file": DATABASE_NAME if db_file else None,
        },
        "files": files,
    }
    (work / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(work, folder)  # complete or absent, never half a backup under the final name
    total = sum(f["size"] for f in files)
    return BackupResult(folder, db_file is not None, len(files), total)
