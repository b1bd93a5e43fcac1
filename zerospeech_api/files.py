"""Files: durable writes (a file replaced whole: temp file, fsync, rename, fsync of the folder),
and where a package's data files are."""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename (or a new name) inside the folder `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes | str, *, mode: int = 0o600) -> None:
    """Replace `path` with `data` (text as UTF-8), with permissions `mode`.

    Readers see the old file or the new one, never half of it (a temporary file in the same
    folder, renamed over `path`); once this returns, the new file survives a crash (the file
    and the folder entry are fsynced). The folder is created if missing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def package_path(package: str, *parts: str) -> Path:
    """A data file or folder shipped inside `package` (an installed package, ours or not).

    From a source tree or a virtual environment, it is in the package's own folder. The pyz
    imports packages from the zip, where nothing can be opened by path, and extracts their data
    folders (packaging/finish_pyz.py, DATA_ON_DISK) into its site-packages, which shiv's
    bootstrap put on sys.path: the first of these places that has it wins. On a first run the
    extraction may still be running beside the imports: then the search waits for it (the pyz's
    start-up module, packaging/pyz_boot.py) and runs once more.
    """
    for attempt in range(2):
        if attempt:
            finish_extraction()
        spec = importlib.util.find_spec(package)
        folders = list(spec.submodule_search_locations or []) if spec else []
        for folder in [*folders, *(str(Path(e, *package.split("."))) for e in sys.path)]:
            candidate = Path(folder, *parts)
            if candidate.exists():
                return candidate.resolve()
    raise FileNotFoundError(f"{'/'.join(parts)} of the package {package} is nowhere on disk")


def finish_extraction() -> None:
    """From the pyz, on its first run: wait until its files are extracted, if that still runs
    beside this process's imports (packaging/pyz_boot.py); otherwise nothing to do. For code
    about to read those files by path, or to run another program from them."""
    boot = sys.modules.get("_zerospeech_boot")  # the pyz's start-up module
    if boot is not None:
        boot.finish_extraction()
