"""A small file system of the test's own (tmpfs, mounted as root) to fill up for real, what a
full-disk test checks and sends, a private small disk for one command (unshare), and another
process writing a temp file the way uploads do (to kill, as a crashed worker)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.factories import multipart_body
from zerospeech_api.db.engine import Database
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage

FILLER = "filler.bin"


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "8m") -> Iterator[Path]:
    """Mount a tmpfs of `size` on `path` for the duration (skip, or fail in CI, if impossible)."""
    from tests.conftest import missing_tool

    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        missing_tool(f"cannot mount a small tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        # Lazily if something still holds a file there: never leave a mount behind.
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path, *, leave: int = 0) -> Path:
    """Grow the filler file on `path`'s file system until at most `leave` bytes are free."""
    filler = path / FILLER
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while (free := shutil.disk_usage(path).free) > leave:
            try:
                os.write(fd, bytes(min(1 << 20, max(free - leave, 1))))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler


def free_up(path: Path) -> None:
    """Remove the filler: the space is back."""
    with contextlib.suppress(FileNotFoundError):
        (path / FILLER).unlink()


def temp_files(settings: Settings) -> list[str]:
    """The names in the data folder's temp area (parts streaming, joins, or leftovers)."""
    directory = storage.tmp_dir(settings)
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def send_unsized(
    http: Any, submission_id: str, archive: Path, headers: dict[str, str], *, chunk: int
) -> httpx.Response:
    """POST `archive` as one part in a chunked body that announces no size (so the disk can
    fill up while it streams), through `http` (an httpx client or a TestClient)."""
    body, content_type = multipart_body(files={"file": (archive.name, archive.read_bytes())})
    return http.post(  # type: ignore[no-any-return]
        f"/submissions/{submission_id}/content/add",
        params={"part_name": archive.name},
        content=(body[i : i + chunk] for i in range(0, len(body), chunk)),
        headers={**headers, "content-type": content_type},
    )


def empty_wal(db: Database) -> None:
    """Checkpoint SQLite's WAL down to nothing, so that the next write has to grow it (and so
    meets a full disk)."""
    raw = db.engine.raw_connection()
    try:
        checkpoint = raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert checkpoint.fetchone()[0] == 0
    finally:
        raw.close()


def assert_intact(db: Database) -> None:
    """SQLite's integrity check passes (other backends: nothing to check here)."""
    if db.is_sqlite:
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


_WRITER = """
import sys, time
from pathlib import Path
from zerospeech_api.submissions import tempfiles
fd, path = tempfiles.create_locked(Path(sys.argv[1]), sys.argv[2])
print(path, flush=True)
time.sleep(600)
"""


class TempFileWriter:
    """A process holding a locked temp file in `directory`, as an upload or a join does."""

    def __init__(self, directory: Path, prefix: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(directory), prefix],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.path = Path(self.proc.stdout.readline().strip())

    def kill(self) -> None:
        """Die like kill -9 (the kernel drops the lock; the file stays)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> TempFileWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.kill()


_MOUNT_AND_RUN = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'


def run_on_small_disk(
    mount: Path, argv: list[str], *, size: str = "1m"
) -> subprocess.CompletedProcess[str]:
    """Run `argv` in a private mount namespace where `mount` is a tmpfs of `size`: a real disk
    that fills up (ENOSPC from the kernel). Skips where the kernel does not allow it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    # As root a mount namespace is enough; otherwise a user namespace must allow it.
    for flags in (["-m"], ["-r", "-m"]) if os.geteuid() == 0 else (["-r", "-m"],):
        command = [unshare, *flags, "sh", "-c", _MOUNT_AND_RUN, "sh", size, str(mount)]
        if subprocess.run([*command, "true"], capture_output=True).returncode == 0:
            return subprocess.run([*command, *argv], capture_output=True, text=True, check=True)
    pytest.skip("this kernel does not let the tests mount a small tmpfs (unshare -m)")
