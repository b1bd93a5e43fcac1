"""Start-up of the pyz: shiv's bootstrap, reading the zip through the zipimporter that holds it.

shiv's bootstrap opens the running pyz as a zipfile.ZipFile to read `environment.json`, which
reads the zip's whole directory (thousands of entries: tens of milliseconds) right after
zipimport read the same directory to import the bootstrap itself, and again on every start,
warm or not. `install` gives the bootstrap a stand-in for that ZipFile: `read` goes through the
zipimporter (its directory is cached), and a real ZipFile is opened only for what needs one,
the first run's extraction. Everything else is shiv's own code, unchanged.

finish_pyz puts this file at the root of the zip as `_zerospeech_boot` and a `__main__.py` that
calls `install(_bootstrap)` before `_bootstrap.bootstrap()` (standard library only).
"""

from __future__ import annotations

import os
import sys
import zipfile
import zipimport
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType


class Archive:
    """The running pyz as shiv's bootstrap uses it: `filename` and `read` without reading the
    zip's directory again; anything else (`infolist`, `extract`) from a ZipFile opened then."""

    def __init__(self, filename: str, importer: zipimport.zipimporter) -> None:
        self.filename = filename
        self._importer = importer
        self._zip: zipfile.ZipFile | None = None

    def read(self, name: str) -> bytes:
        return self._importer.get_data(name)

    def __getattr__(self, name: str) -> object:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.filename)
        return getattr(self._zip, name)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def install(bootstrap: ModuleType) -> None:
    """Replace the bootstrap's `current_zipfile` by one yielding an `Archive` when the zip being
    run (sys.argv[0], as shiv reads it) is the one the bootstrap was imported from; in any other
    case shiv's own runs."""
    importer = getattr(bootstrap, "__loader__", None)
    if not isinstance(importer, zipimport.zipimporter):
        return
    shivs = bootstrap.current_zipfile

    @contextmanager
    def current_zipfile() -> Iterator[object]:
        if not _same_file(importer.archive, sys.argv[0]):
            with shivs() as found:
                yield found
            return
        archive = Archive(sys.argv[0], importer)
        try:
            yield archive
        finally:
            archive.close()

    setattr(bootstrap, "current_zipfile", current_zipfile)  # noqa: B010 (a module's function)


def _same_file(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False
