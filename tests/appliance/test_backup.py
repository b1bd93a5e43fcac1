"""Online backup: consistent SQLite copy while writers run, data-folder manifest, PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.helpers.factories import make_user
from zerospeech_api.appliance.backup import MANIFEST_NAME, BackupError, backup
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import User
from zerospeech_api.settings import Settings


def _data_files(settings: Settings) -> dict[str, bytes]:
    files = {
        "submissions/ab/cd/archive.zip": b"PK" + bytes(range(256)) * 40,
        "outbox/0001.eml": b"Subject: hello\n\nbody\n",
        "logs/api.log": b"a log line\n",
    }
    for relative, content in files.items():
        path = settings.data_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    run = settings.data_dir / "run"
    run.mkdir(exist_ok=True)
    (run / "supervisord.pid").write_text("123\n")
    return files


def test_backup_copies_the_database_and_lists_the_data_folder(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    make_user(db, settings, username="kept")
    files = _data_files(settings)
    result = backup(settings, tmp_path / "backups")

    manifest = json.loads((result.folder / MANIFEST_NAME).read_text())
    listed = {entry["path"]: entry for entry in manifest["files"]}
    for relative, content in files.items():
        assert listed[relative]["size"] == len(content)
        assert listed[relative]["sha256"] == hashlib.sha256(content).hexdigest()
    assert not any(path.startswith("run/") for path in listed)  # sockets and pids are not data
    assert not any(path.startswith("zerospeech.db") for path in listed)
    assert result.files == len(listed)

    if db.is_sqlite:
        assert result.database_copied and manifest["database"]["copied"]
        with sqlite3.connect(result.folder / "zerospeech.db") as copy:
            names = [row[0] for row in copy.execute("SELECT username FROM users")]
        assert names == ["kept"]
    else:
        assert not result.database_copied
        assert manifest["database"] == {"backend": "postgresql", "copied": False, "file": None}
        assert not (result.folder / "zerospeech.db").exists()


def test_the_copy_is_consistent_while_writers_keep_writing(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    database = Database(settings.database)
    from zerospeech_api.db.migrate import upgrade

    upgrade(database.engine)
    stop = threading.Event()
    written = []

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            make_user(database, settings, username=f"w{n}")
            written.append(n)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 5:
            stop.wait(0.01)
        result = backup(settings, tmp_path / "backups", checksums=False)
    finally:
        stop.set()
        thread.join()
    with sqlite3.connect(result.folder / "zerospeech.db") as copy:
        (verdict,) = copy.execute("PRAGMA integrity_check").fetchone()
        (count,) = copy.execute("SELECT count(*) FROM users").fetchone()
        (mode,) = copy.execute("PRAGMA journal_mode").fetchone()
    assert verdict == "ok"
    assert 5 <= count <= len(written)
    assert mode == "delete"  # a self-contained file, no -wal needed beside it
    with database.session(read_only=True) as session:
        assert session.scalar(select(func.count()).select_from(User)) == len(written)
    database.dispose()


def test_backup_refuses_a_target_inside_the_data_folder(make_settings) -> None:
    settings = make_settings()
    settings.data_dir.mkdir(parents=True)
    with pytest.raises(BackupError, match="outside the data folder"):
        backup(settings, settings.data_dir / "backups")


def test_backup_command(database_url: str, tmp_path: Path) -> None:
    """`backup TARGET`: exit 0 with the SQLite copy; on PostgreSQL it says to use pg_dump."""
    from tests.helpers.cli import cli_process

    env = {"ZR_DATA_DIR": str(tmp_path / "data"), "ZR_DATABASE_URL": database_url}
    assert cli_process(tmp_path, "init", env=env).returncode == 0
    result = cli_process(tmp_path, "backup", str(tmp_path / "backups"), env=env)
    (folder,) = (tmp_path / "backups").iterdir()
    assert (folder / MANIFEST_NAME).is_file()
    if database_url.startswith("sqlite"):
        assert result.returncode == 0, result.stderr
        assert (folder / "zerospeech.db").is_file()
    else:
        assert result.returncode == 1
        assert "pg_dump" in result.stderr
