"""Start-up of the pyz: shiv's bootstrap, reading the zip through the zipimporter that holds it,
and a first run that extracts beside the imports.

1. shiv's bootstrap opens the running pyz as a zipfile.ZipFile to read `environment.json`,
   which reads the zip's whole directory (thousands of entries: tens of milliseconds) right
   after zipimport read the same directory to import the bootstrap itself, and again on every
   start, warm or not. `install` gives the bootstrap a stand-in for that ZipFile: `read` goes
   through the zipimporter (its directory is cached), and a real ZipFile is opened only for
   what needs one, the first run's extraction.
2. On the first run shiv extracts site-packages/ (the compiled modules, the data folders: what
   packaging/finish_pyz.py leaves on disk) before anything is imported, a fifth to half a
   second on a small machine. `Extraction` does the same work (shiv's lock, its temporary
   folder, the same atomic rename) in a child process forked at boot, compiled modules first,
   in the order the start needs them, while the start imports the rest from the zip; an import
   that needs an extracted file waits for that file only (`PendingFiles`). Modules loaded from
   the temporary folder are pointed at the final one after the rename, which waits for any such
   load in progress. A fork of this process, and `finish_extraction()` (reads of the data
   folders by path, `supervise` before it changes user), wait for the whole extraction.
Everything else is shiv's own code, unchanged.

finish_pyz puts this file at the root of the zip as `_zerospeech_boot` and a `__main__.py` that
calls `install(_bootstrap)` before `_bootstrap.bootstrap()` (standard library only).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import threading
import zipfile
import zipimport
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any


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
    shivs_extraction = bootstrap.extract_site_packages

    def extract_site_packages(
        archive: object,
        target_path: Path,
        compile_pyc: bool = False,
        compile_workers: int = 0,
        force: bool = False,
    ) -> None:
        if not isinstance(archive, Archive) or compile_pyc or force:
            shivs_extraction(archive, target_path, compile_pyc, compile_workers, force)
            return
        try:
            members = json.loads(archive.read(EXTRACTED_INDEX))
        except (KeyError, OSError, ValueError):  # a zip not finished by finish_pyz
            shivs_extraction(archive, target_path, compile_pyc, compile_workers, force)
            return
        Extraction(bootstrap, archive.filename, Path(target_path), set(members)).start()

    setattr(bootstrap, "extract_site_packages", extract_site_packages)  # noqa: B010


def _same_file(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


# Written by finish_pyz: the site-packages/ entries of the zip, what the first run extracts.
EXTRACTED_INDEX = "_zerospeech_extracted.json"
# The compiled modules the start imports first, in that order (pydantic's core comes with the
# settings, SQLAlchemy's with the database); the other extension modules follow, then the rest.
FIRST_NEEDED = ("site-packages/pydantic_core/", "site-packages/sqlalchemy/")
EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def extraction_order(name: str) -> tuple[int, str]:
    for rank, prefix in enumerate(FIRST_NEEDED):
        if name.startswith(prefix) and name.endswith(EXTENSION_SUFFIXES):
            return rank, name
    return len(FIRST_NEEDED) + (0 if name.endswith(EXTENSION_SUFFIXES) else 1), name


class ExtractionFailed(ImportError):
    pass


def finish_extraction() -> None:
    """Wait for this process's first-run extraction, if one is running (a no-op otherwise):
    for code about to read extracted files by path, or to run another program from them."""
    for finder in list(sys.meta_path):
        if isinstance(finder, PendingFiles):
            finder.invalidate_caches()


class Extraction:
    """shiv's first-run extraction (same lock, temporary folder and rename) beside the imports.

    The files are written by a child process forked at boot, before anything else runs: a
    thread of this process would share its GIL with the imports, and each of its steps would
    wait for the importing thread to give the GIL up (every switch interval), slowing both.
    The child reports each file written on a pipe; a thread here reads the reports, then, with
    the child done, renames the folder and releases shiv's lock. Imports wait for it only in
    their loaders, outside the global import lock Python holds while it asks the finders."""

    def __init__(self, bootstrap: ModuleType, filename: str, target: Path, members: set[str]):
        self.bootstrap = bootstrap
        self.filename = filename
        self.target = target
        self.temporary = Path(target.parent, target.name + ".tmp")
        self.site = target / "site-packages"
        self.members = members
        self.written: set[str] = set()
        self.renamed = False  # the temporary folder is the final one now
        self.finished = False
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        # Held while a module loads from the temporary folder: the rename waits for it.
        self.loading = threading.RLock()
        self.loaded: list[ModuleSpec] = []  # specs naming a file in the temporary folder
        self.thread = threading.Thread(target=self._watch, name="pyz-extraction")

    def start(self) -> None:
        from _zerospeech_imports import install as install_imports

        # Installed here: imported now, the helper would not install itself again from the .pth
        # (a module runs once), and the folder that .pth is in may not be complete yet.
        install_imports(str(self.site))
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.lock = self.bootstrap.FileLock(Path(self.target.parent, f".{self.target.name}_lock"))
        self.lock.__enter__()  # another process extracting: wait for it, as shiv does
        if self.target.exists():  # it did
            self.lock.__exit__(None, None, None)
            return
        reports, writer = os.pipe()
        self.child = os.fork()
        if self.child == 0:  # pragma: no cover (the child process)
            os.close(reports)
            os._exit(self._extract(writer))
        os.close(writer)
        self.reports = os.fdopen(reports, "r", encoding="utf-8")
        sys.meta_path.insert(0, PendingFiles(self))
        os.register_at_fork(before=self.wait)  # a child of ours gets no copy of the thread
        self.thread.start()

    def _extract(self, writer: int) -> int:
        """In the child: write every member into the temporary folder, reporting each."""
        try:
            with os.fdopen(writer, "w", encoding="utf-8") as report:
                with zipfile.ZipFile(self.filename) as archive:
                    members = [i for i in archive.infolist() if i.filename in self.members]
                    members.sort(key=lambda info: extraction_order(info.filename))
                    for info in members:
                        path = self.temporary / info.filename
                        if info.is_dir():
                            path.mkdir(parents=True, exist_ok=True)
                        else:
                            path.parent.mkdir(parents=True, exist_ok=True)
                            path.write_bytes(archive.read(info))
                            os.chmod(path, info.external_attr >> 16)  # as shiv does
                        report.write(f"{info.filename}\n")
                        report.flush()
            return 0
        except BaseException as exc:
            sys.stderr.write(f"zerospeech-api: extracting {self.filename} failed: {exc}\n")
            return 1

    def _watch(self) -> None:
        """In this process: follow the child's reports, then rename and release the lock."""
        try:
            for line in self.reports:
                with self.changed:
                    self.written.add(line.rstrip("\n"))
                    self.changed.notify_all()
            try:
                _pid, status = os.waitpid(self.child, 0)
                code = os.waitstatus_to_exitcode(status)
            except ChildProcessError:  # reaped by another waitpid (a server's SIGCHLD handler)
                code = 0  # what it wrote, below, tells
            if code != 0 or self.written != self.members:
                missing = len(self.members - self.written)
                raise OSError(f"the extraction process stopped ({code}, {missing} files missing)")
            with self.loading:
                shutil.move(str(self.temporary), str(self.target))
                self.renamed = True
                for spec in self.loaded:
                    self._moved(spec)
        except BaseException as exc:
            self.error = exc
        finally:
            self.reports.close()
            self.lock.__exit__(None, None, None)
            with self.changed:
                self.finished = True
                self.changed.notify_all()

    def _moved(self, spec: ModuleSpec) -> None:
        origin = str(spec.origin)
        final = str(self.target / Path(origin).relative_to(self.temporary))
        spec.origin = final
        if isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            spec.loader.path = final
        module = sys.modules.get(spec.name)
        if module is not None and getattr(module, "__file__", None) == origin:
            module.__file__ = final

    def wait_for(self, members: set[str]) -> None:
        """Until `members` are written (or the extraction is over)."""
        with self.changed:
            self.changed.wait_for(lambda: members <= self.written or self.finished)
        self._raise_on_failure()

    def wait(self) -> None:
        """Until the extraction is over (the folder complete and in place)."""
        if threading.current_thread() is not self.thread and self.thread.is_alive():
            self.thread.join()
        self._raise_on_failure()

    def _raise_on_failure(self) -> None:
        if self.error is not None:
            raise ExtractionFailed(
                f"{self.filename} could not be extracted into {self.target}: {self.error}"
            )


class PendingFiles:
    """A meta path finder in front of the others while the first run's extraction runs.

    It never waits (Python holds its global import lock around finders): for a compiled
    module that is being extracted it returns a spec whose loader waits for that file; for a
    package or module extracted whole, one whose loader waits for the end of the extraction;
    anything else goes to the other finders. Once the extraction is over it refreshes the
    import caches and idles."""

    def __init__(self, extraction: Extraction) -> None:
        self.extraction = extraction
        self.done = False

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> Any:
        extraction = self.extraction
        if self.done or threading.current_thread() is extraction.thread:
            return None
        if extraction.finished:
            self.invalidate_caches()
            return None
        package, _, name = fullname.rpartition(".")
        folder = "site-packages/" + (package.replace(".", "/") + "/" if package else "")
        for suffix in EXTENSION_SUFFIXES:
            member = f"{folder}{name}{suffix}"
            if member in extraction.members:
                loader = PendingExtension(fullname, str(extraction.target / member))
                loader.extraction, loader.member = extraction, member
                return importlib.util.spec_from_loader(fullname, loader)
        if package:
            return None
        for member, locations in (
            (f"{folder}{name}/__init__.py", True),
            (f"{folder}{name}.py", False),
        ):
            if member in extraction.members:
                final = extraction.target / member
                source = PendingSource(fullname, str(final))
                source.extraction = extraction
                return importlib.util.spec_from_file_location(
                    fullname,
                    final,
                    loader=source,
                    submodule_search_locations=[str(final.parent)] if locations else None,
                )
        return None

    def invalidate_caches(self) -> None:
        """Finish the extraction, then forget what the finders saw of its folder before.

        Not importlib.invalidate_caches(): in a zip app that makes every zipimporter read the
        zip's whole directory again (seconds, with one importer per package folder). And this
        finder stays on sys.meta_path, idle: Python iterates that very list while it asks the
        finders, and a removal would skip the next one."""
        self.extraction.wait()
        if not self.done:
            self.done = True
            sys.path_importer_cache.pop(str(self.extraction.site), None)
            from _zerospeech_imports import ExtractedExtensions  # imported by start()

            for finder in sys.meta_path:
                if isinstance(finder, ExtractedExtensions):
                    finder.invalidate_caches()


class PendingExtension(importlib.machinery.ExtensionFileLoader):
    """A compiled module loaded as soon as its file is written, from where it is then (the
    rename waits until it is loaded, and points its spec at the final folder)."""

    extraction: Extraction
    member: str

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        extraction = self.extraction
        # The file, and the shared libraries of its distribution (`psycopg_binary.libs/`, that
        # it links by relative path: auditwheel's layout).
        libraries = "site-packages/" + self.member.split("/")[1].split(".")[0] + ".libs/"
        needed = {m for m in extraction.members if m.startswith(libraries)} | {self.member}
        extraction.wait_for(needed)
        with extraction.loading:
            if extraction.renamed or self.member not in extraction.written:
                self.path = spec.origin = str(extraction.target / self.member)
            else:
                self.path = spec.origin = str(extraction.temporary / self.member)
                extraction.loaded.append(spec)
            return super().create_module(spec)


class PendingSource(importlib.machinery.SourceFileLoader):
    """A module or package extracted whole, loaded once the extraction is over."""

    extraction: Extraction

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        self.extraction.wait()
        return super().create_module(spec)
