"""A small file system of the test's own (tmpfs, mounted as root) to fill up for real, and
another process writing a temp file the way uploads do (to kill, as a crashed worker)."""

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
