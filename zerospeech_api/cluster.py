"""Several hosts on one database and one shared data folder: the folder check at start-up and
the cluster-wide read-only switch, both kept in the `cluster_settings` table.

- **The shared folder**: the first process to start writes a random id into the data folder
  (`.zerospeech-folder-id`) and into the database, under a database lock; every later start of
  `serve`, `worker`, `dev` and `supervise` compares the two. A host that mounted a wrong or a
  local folder (or none, so the data folder is a fresh empty one) refuses to start and says why,
  instead of answering with files nobody else sees.
- **Read-only**: `read-only on|off` writes a flag every server process re-reads every
  `READ_ONLY_RECHECK_SECONDS` (`ReadOnlySwitch`); `ZR_READ_ONLY` still works per process.
"""

from __future__ import annotations

import logging
import secrets
import tempfile
import threading
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from zerospeech_api.db.cluster import db_now, named_lock
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import ClusterSetting
from zerospeech_api.files import write_atomically
from zerospeech_api.settings import Settings

log = logging.getLogger("zerospeech_api.cluster")

FOLDER_ID_KEY = "data_folder_id"
READ_ONLY_KEY = "read_only"
MARKER_NAME = ".zerospeech-folder-id"
FOLDER_LOCK = "zerospeech:data-folder"
READ_ONLY_RECHECK_SECONDS = 2.0

NOT_WRITABLE = "the data folder {folder} is not writable here ({reason}): fix its mount or owner"
NO_MARKER = (
    "the data folder {folder} is not the one this database uses: it has no {marker} (the "
    "database's folder has id {expected}); mount the shared data folder at ZR_DATA_DIR on this "
    "host (a wrong or local folder is refused so that no file is lost)"
)
OTHER_MARKER = (
    "the data folder {folder} belongs to another database (its {marker} says {found}, this "
    "database's folder is {expected}): mount the shared data folder at ZR_DATA_DIR on this host"
)
UNKNOWN_MARKER = (
    "the data folder {folder} was used with another database (its {marker} says {found}, this "
    "database has none): point ZR_DATABASE_URL at that database, or if this folder really is "
    "to be used with this database, delete {marker} and start again"
)


class SharedFolderError(Exception):
    """The data folder cannot be used by this host; the message says why and what to do."""


def marker_path(settings: Settings) -> Path:
    """The file tying the data folder to its database."""
    return settings.data_dir / MARKER_NAME


def _read_marker(path: Path) -> str | None:
    try:
        return path.read_text("ascii").strip() or None
    except FileNotFoundError:
        return None


def _check_writable(settings: Settings) -> None:
    """Create this host's node folder and write a file in it (a read-only mount fails here)."""
    folder = settings.data_dir.resolve()
    try:
        settings.node_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.node_dir, prefix=".probe-") as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as exc:
        raise SharedFolderError(
            NOT_WRITABLE.format(folder=folder, reason=exc.strerror or type(exc).__name__)
        ) from None


def check_shared_folder(*, settings: Settings, db: Database) -> str:
    """Refuse a data folder that is not writable or not the database's; returns its id.

    The first start (no id anywhere) creates the id in both places, under the database's lock,
    so hosts starting together agree on one."""
    _check_writable(settings)
    folder = settings.data_dir.resolve()
    marker = marker_path(settings)
    lock_file = settings.node_dir / ".folder.lock"
    with named_lock(db.engine, FOLDER_LOCK, lock_file=lock_file), db.transaction() as session:
        row = session.get(ClusterSetting, FOLDER_ID_KEY)
        expected = row.value if row is not None else None
        found = _read_marker(marker)
        names = {"folder": folder, "marker": MARKER_NAME, "expected": expected, "found": found}
        if expected is None and found is None:
            expected = secrets.token_hex(16)
            session.add(
                ClusterSetting(key=FOLDER_ID_KEY, value=expected, updated_at=db_now(session))
            )
            session.flush()  # a failed insert leaves no marker behind
            # Before the commit: never an id only in the database.
            write_atomically(marker, expected + "\n")
            log.info("data folder %s now belongs to this database (id %s)", folder, expected)
            return expected
        if expected is None:
            raise SharedFolderError(UNKNOWN_MARKER.format(**names))
        if found is None:
            raise SharedFolderError(NO_MARKER.format(**names))
        if found != expected:
            raise SharedFolderError(OTHER_MARKER.format(**names))
        return expected


def read_only(*, session: Session) -> bool:
    """The cluster-wide read-only flag (False when never set)."""
    value = session.scalar(select(ClusterSetting.value).where(ClusterSetting.key == READ_ONLY_KEY))
    return value == "on"


def set_read_only(*, session: Session, on: bool) -> None:
    """Switch read-only on or off for every host (each server sees it within a few seconds)."""
    row = session.get(ClusterSetting, READ_ONLY_KEY, with_for_update=True)
    value = "on" if on else "off"
    if row is None:
        session.add(ClusterSetting(key=READ_ONLY_KEY, value=value, updated_at=db_now(session)))
    else:
        row.value = value
        row.updated_at = db_now(session)


class ReadOnlySwitch:
    """Whether this server process refuses writes: `ZR_READ_ONLY`, or the cluster's flag as
    last read (a thread re-reads it every `READ_ONLY_RECHECK_SECONDS`; a failed read keeps the
    last value: the database being away is no reason to change modes)."""

    def __init__(self, *, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.cluster = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.settings.read_only or self.cluster

    def refresh(self) -> None:
        """Read the cluster's flag now."""
        try:
            with self.db.session(read_only=True) as session:
                self.cluster = read_only(session=session)
        except Exception as exc:
            log.warning("read-only flag not read: %s", type(exc).__name__)

    def start(self) -> None:
        """Read the flag, then keep re-reading it until `stop()`."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="zr-read-only", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(READ_ONLY_RECHECK_SECONDS):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
