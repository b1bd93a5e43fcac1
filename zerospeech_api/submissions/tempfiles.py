"""Temp files owned by a live process: created locked, swept once their owner is gone.

Every temp file of an upload or a join lives in its host's node folder
(<data>/nodes/<node>/tmp) and is flock'ed by its writer for as long as it exists under its temp
name. The kernel drops the lock when the process dies (kill -9 included), so a sweep removes
exactly the files whose lock it can take: the living keep theirs, whatever their age. Only
processes of one host share a node folder, so the lock never has to hold across hosts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

SUFFIX = ".tmp"
# What the temp name of a part being received, and of an archive being joined, starts with.
UPLOAD_PREFIX = "upload-"
JOIN_PREFIX = "join-"
# Only a safety margin: creation cannot be seen unlocked (see `create_locked`), so a dead
# writer's file goes at the first sweep after it has been idle this long.
MIN_AGE_SECONDS = 5.0


def create_locked(directory: Path, prefix: str) -> tuple[int, Path]:
    """A new empty file `<prefix>*.tmp` in `directory`, already flock'ed by this process."""
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=SUFFIX, dir=directory)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A sweep may have taken the lock between mkstemp and ours and removed the file: the
        # inode then has no name any more, so start again with a new one.
        if os.fstat(fd).st_nlink > 0:
            return fd, Path(name)
        os.close(fd)


def sweep(directory: Path, prefixes: Iterable[str], *, min_age: float = MIN_AGE_SECONDS) -> int:
    """Delete our temp files whose writer is gone (nobody holds their lock); returns how many."""
    if not directory.is_dir():
        return 0
    prefixes = tuple(prefixes)
    removed = 0
    now = time.time()
    for path in directory.iterdir():
        if not path.name.startswith(prefixes) or not path.name.endswith(SUFFIX):
            continue
        try:
            if not path.is_file() or now - path.stat().st_mtime < min_age:
                continue
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live process is writing it
        try:
            # Unlink only the inode we locked (the name may have been renamed away meanwhile).
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    path.unlink()
                    removed += 1
        finally:
            os.close(fd)
    return removed
