"""The running pyz: where it is, its build id, old extractions, and a private handle per fork.

shiv extracts the pyz's site-packages once per build into `$SHIV_ROOT/<file name>_<build id>`
(default root `~/.shiv`), under a file lock and with an atomic rename, so processes starting at
once never see a half-extracted tree. Each new build gets a new folder; `cleanup-extractions`
removes the ones no process uses any more.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from zipimport import zipimporter

EXTRACTION_NAME = re.compile(r"^(?P<archive>.+)_(?P<build>[0-9a-f]{64})(?P<tmp>\.tmp)?$")
PACKAGE = "zerospeech_api"


def archive_path() -> Path | None:
    """The absolute path of the running pyz, or None when not running from one."""
    return _archive_path()


@cache
def _archive_path() -> Path | None:
    # shiv's bootstrap package is imported from inside the archive: its __file__ is
    # <archive>/_bootstrap/__init__.py, whatever sys.argv[0] or the working folder say now.
    bootstrap = sys.modules.get("_bootstrap")
    location = getattr(bootstrap, "__file__", None)
    if not location:
        return None
    for parent in Path(location).parents:
        if parent.is_file() and zipfile.is_zipfile(parent):
            return parent.resolve()
    return None


@cache
def environment() -> dict[str, object] | None:
    """shiv's environment.json of the running pyz (build id, build time...), or None."""
    archive = archive_path()
    if archive is None:
        return None
    found = json.loads(read_member(archive, "environment.json"))
    if not isinstance(found, dict):
        raise ValueError(f"{archive}: environment.json is not a JSON object")
    return found


def read_member(archive: Path, name: str) -> bytes:
    """A file of the running pyz, through the zipimporter that imports from it (it holds the
    zip's directory already: reading that again costs tens of milliseconds), else zipfile."""
    given = {
        i.archive for i in list(sys.path_importer_cache.values()) if isinstance(i, zipimporter)
    }
    for path in given:
        if Path(path).resolve() == archive:
            return zipimporter(path).get_data(name)
    with zipfile.ZipFile(archive) as handle:
        return handle.read(name)


def build_id() -> str | None:
    """The build id of the running pyz (sha256 of its contents), or None outside one."""
    env = environment()
    return str(env["build_id"]) if env and env.get("build_id") else None


def shiv_root() -> Path:
    """Where shiv extracts: $SHIV_ROOT, else the root baked into the pyz, else ~/.shiv."""
    root = os.environ.get("SHIV_ROOT") or (environment() or {}).get("root")
    return Path(str(root or "~/.shiv")).expanduser()


def program_command() -> list[str]:
    """argv that runs this same code again: `python /abs/app.pyz` or `python -m zerospeech_api`."""
    archive = archive_path()
    if archive is not None:
        return [sys.executable, str(archive)]
    return [sys.executable, "-m", PACKAGE]


def private_archive_after_fork() -> None:
    """Every process forked from this one reads the running pyz through its own open file."""
    archive = archive_path()
    if archive is not None:
        keep_private_after_fork(archive)


@cache  # once per process and archive: at-fork hooks cannot be unregistered
def keep_private_after_fork(archive: Path) -> None:
    """In each forked child, give every inherited descriptor of `archive` its own open file.

    Why: a descriptor opened before a fork is shared by parent and children as one open file
    description, and so is its file offset. Readers of the zip keep descriptors open across
    forks (importlib.metadata caches a ZipFile on the archive for the life of the process, as
    does any cached zipfile.Path or importlib.resources reader), and zipfile reads by seek, then
    read. Workers forked by the gunicorn master read the package metadata at once on boot, each
    moving the shared offset between another's seek and read: one read the wrong bytes
    (`zlib.error: invalid distance too far back`), failed to boot, and gunicorn exited.
    Reopening at the descriptor level, before the child runs anything, covers every reader
    whoever caches it, and keeps each Python object (ZipFile, its buffer) valid as it is.
    (zipimport opens the file anew for each read; shiv's bootstrap and environment() close
    theirs: neither keeps a descriptor.)
    """
    identity = _identity(os.stat(archive))
    os.register_at_fork(after_in_child=lambda: _reopen_shared(archive, identity))


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


def _reopen_shared(archive: Path, identity: tuple[int, int]) -> None:
    """Replace each descriptor of the archive by a new open file of it at the same offset."""
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    for fd in map(int, os.listdir(folder)):
        try:
            if _identity(os.fstat(fd)) != identity:
                continue
        except OSError:  # the listing's own descriptor, closed by now
            continue
        # /proc/self/fd/N opens the very file, even when the pyz was replaced since (upgrade);
        # elsewhere (and on Linux if /proc is missing) by name, if it is still the same file.
        for path in (f"/proc/self/fd/{fd}", archive):
            try:
                private = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            if _identity(os.fstat(private)) == identity:
                os.lseek(private, os.lseek(fd, 0, os.SEEK_CUR), os.SEEK_SET)
                os.dup2(private, fd, inheritable=os.get_inheritable(fd))
                os.close(private)
                break
            os.close(private)


@dataclass(frozen=True)
class Extraction:
    path: Path
    build_id: str
    current: bool
    in_use: bool


def _paths_in_use() -> set[str]:
    """Files mapped or used as working folder by live processes (Linux /proc)."""
    used: set[str] = set()
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            for line in (entry / "maps").read_text(errors="replace").splitlines():
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    used.add(parts[5])
            used.add(os.readlink(entry / "cwd"))
        except OSError:
            continue  # gone, or not ours to read
    return used


def find_extractions(root: Path | None = None) -> list[Extraction]:
    """zerospeech-api extractions under the shiv root (other shiv apps are left alone)."""
    root = root or shiv_root()
    if not root.is_dir():
        return []
    current = build_id()
    used = _paths_in_use()
    found = []
    for path in sorted(root.iterdir()):
        match = EXTRACTION_NAME.match(path.name)
        if not match or not path.is_dir():
            continue
        if not (path / "site-packages" / PACKAGE).is_dir():
            continue
        prefix = str(path) + os.sep
        found.append(
            Extraction(
                path=path,
                build_id=match["build"],
                current=match["build"] == current and not match["tmp"],
                in_use=any(p.startswith(prefix) or p == str(path) for p in used),
            )
        )
    return found


def remove_extraction(extraction: Extraction) -> bool:
    """Delete an extraction unless shiv holds its lock (an extraction in progress); True if done.

    The folder is renamed away first, so a process starting meanwhile either sees the whole
    tree or none (and then extracts afresh).
    """
    name = extraction.path.name.removesuffix(".tmp")
    lock_path = extraction.path.with_name(f".{name}_lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        doomed = extraction.path.with_name(f"{extraction.path.name}.deleting-{os.getpid()}")
        os.rename(extraction.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        if not extraction.path.with_name(name).exists():
            lock_path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)
