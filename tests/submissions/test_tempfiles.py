"""Temp files of live processes stay, those of dead processes go, whatever their age."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.helpers.disk import TempFileWriter
from zerospeech_api.submissions import tempfiles


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_only_files_of_dead_writers_are_swept(tmp_path: Path) -> None:
    with TempFileWriter(tmp_path, "upload-a-") as live, TempFileWriter(tmp_path, "join-b-") as dead:
        for writer in (live, dead):
            writer.path.write_bytes(b"half a part")
            age(writer.path, 3600)
        dead.kill()
        assert tempfiles.sweep(tmp_path, ("upload-", "join-")) == 1
        assert live.path.exists() and not dead.path.exists()
    # Its writer gone too, but just written to: the margin leaves it for a later sweep.
    os.utime(live.path)
    assert tempfiles.sweep(tmp_path, ("upload-",), min_age=60) == 0
    assert tempfiles.sweep(tmp_path, ("upload-",), min_age=0) == 1
    assert list(tmp_path.iterdir()) == []


def test_our_own_file_is_never_swept_from_under_us(tmp_path: Path) -> None:
    fd, path = tempfiles.create_locked(tmp_path, "upload-c-")
    try:
        assert tempfiles.sweep(tmp_path, ("upload-",), min_age=0) == 0
        assert path.exists()
    finally:
        os.close(fd)
    assert tempfiles.sweep(tmp_path, ("upload-",), min_age=0) == 1
