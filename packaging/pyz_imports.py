"""Import helpers installed in every process started from the pyz (standard library only).

1. Extension modules of packages imported from the zip, loaded from the extraction folder.
   packaging/finish_pyz.py keeps every pure-Python file in the zip (imported by zipimport,
   never extracted) and extracts only what must be a real file, such as the compiled modules
   of sqlalchemy, pydantic_core, psycopg or httptools. Python cannot load those from inside a
   zip, and once `sqlalchemy` is imported from the zip, `sqlalchemy.engine._row_cy` is looked
   for there only. ExtractedExtensions loads such a submodule from the same place under the
   extracted site-packages (`site-packages/sqlalchemy/engine/_row_cy.cpython-311-...so`), where
   its own dependencies are too (`psycopg_binary.libs/` for `psycopg_binary/pq...so`). It comes
   before the standard path finder on sys.meta_path, as in a plain folder, where a compiled
   module wins over a same-named folder (pydantic_core has a folder of typing stubs named like
   its module).
2. Package metadata read straight from the zip: importlib.metadata looks through sys.path, the
   archive first, and for a zip it reads its whole directory again and builds every implied
   folder (pydantic asks for email-validator's version at start-up). ZipDistributions answers
   named look-ups of the packages in the zip from a list finish_pyz writes
   (`_zerospeech_imports.json`: normalised name -> .dist-info folder), read through the
   zipimporter that already holds the directory; others go on to the standard finder.
3. One read per module from the zip: Python 3.11's zipimporter reads, decompresses and
   unmarshals a module's bytecode once to name its file (for the module spec) and again to run
   it; SingleReadZipImporter keeps the first code object for the second call.

finish_pyz puts this file at the root of the zip as `_zerospeech_imports` and
`site-packages/_zerospeech_imports.pth` next to the extracted files: shiv's bootstrap adds the
extraction folder with site.addsitedir, which runs the .pth's import before any entry point or
interpreter mode.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import re
import sys
import zipimport
from importlib.machinery import ModuleSpec
from types import CodeType

# zipimport's own loading function (private, in 3.11 as in 3.8-3.13): without it, no change.
_get_module_code = getattr(zipimport, "_get_module_code", None)

PTH_NAME = "_zerospeech_imports.pth"
METADATA_INDEX = "_zerospeech_imports.json"


class ExtractedExtensions:
    """A meta path finder for the extension submodules of packages imported from the zip."""

    def __init__(self, site: str) -> None:
        self.site = site
        # package folder -> it holds only extension modules (a package extracted whole, with
        # its __init__.py, is found by the standard finder)
        self._folders: dict[str, bool] = {}

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if not package:  # top-level ones are found through sys.path (the folder is on it)
            return None
        folder = os.path.join(self.site, *package.split("."))
        partial = self._folders.get(folder)
        if partial is None:  # once per package: most have nothing extracted
            partial = os.path.isdir(folder) and not os.path.exists(
                os.path.join(folder, "__init__.py")
            )
            self._folders[folder] = partial
        if not partial:
            return None
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = os.path.join(folder, name + suffix)
            if os.path.isfile(candidate):
                return importlib.util.spec_from_file_location(fullname, candidate)
        return None

    def invalidate_caches(self) -> None:
        self._folders.clear()


class ZipDistribution(importlib.metadata.Distribution):
    """A package's metadata in the zip, read through the archive's zipimporter."""

    def __init__(self, importer: zipimport.zipimporter, folder: str) -> None:
        self._importer = importer
        self._folder = folder

    def read_text(self, filename: str) -> str | None:
        try:
            return self._importer.get_data(f"{self._folder}/{filename}").decode("utf-8")
        except OSError:
            return None

    def locate_file(self, path: str | os.PathLike[str]) -> pathlib.Path:
        return pathlib.Path(self._importer.archive, path)  # inside the zip, like the standard


class ZipDistributions:
    """A meta path finder answering importlib.metadata's named look-ups of the zip's packages."""

    def __init__(self, importer: zipimport.zipimporter) -> None:
        self._importer = importer
        self._folders: dict[str, str] | None = None

    def find_spec(self, *_args: object) -> None:
        return None

    def find_distributions(
        self, context: importlib.metadata.DistributionFinder.Context | None = None
    ) -> list[ZipDistribution]:
        name = getattr(context, "name", None)
        path = getattr(context, "path", sys.path)
        if not name or self._importer.archive not in path:
            return []  # all of them (or another path): the standard finder lists them
        if self._folders is None:
            try:
                self._folders = json.loads(self._importer.get_data(METADATA_INDEX))
            except (OSError, ValueError):
                self._folders = {}
        folder = self._folders.get(normalise(name))
        return [ZipDistribution(self._importer, folder)] if folder else []


def normalise(name: str) -> str:
    """A distribution name as importlib.metadata compares them (PEP 503, then `_`)."""
    return re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")


class SingleReadZipImporter(zipimport.zipimporter):
    """zipimporter whose get_filename (called while the spec is made) keeps the code it had
    to load, for the get_code that runs the module right after."""

    def get_filename(self, fullname: str) -> str:
        code, _package, path = _get_module_code(self, fullname)
        self.__dict__.setdefault("_loaded", {})[fullname] = code
        return path

    def get_code(self, fullname: str) -> CodeType:
        code = self.__dict__.get("_loaded", {}).pop(fullname, None)
        return code if code is not None else super().get_code(fullname)


def install(site: str) -> None:
    """Put the extension finder for `site` just before the standard path finder, and the
    single-read zipimporter in place of the standard one (once)."""
    if any(isinstance(f, ExtractedExtensions) and f.site == site for f in sys.meta_path):
        return
    standard = importlib.machinery.PathFinder
    index = sys.meta_path.index(standard) if standard in sys.meta_path else len(sys.meta_path)
    sys.meta_path.insert(index, ExtractedExtensions(site))
    archive = getattr(__spec__.loader, "archive", None)  # this module is in the zip
    if archive is not None:
        sys.meta_path.insert(index, ZipDistributions(zipimport.zipimporter(archive)))
    if _get_module_code is None or zipimport.zipimporter not in sys.path_hooks:
        return
    sys.path_hooks[sys.path_hooks.index(zipimport.zipimporter)] = SingleReadZipImporter
    for entry, importer in list(sys.path_importer_cache.items()):
        if type(importer) is zipimport.zipimporter:  # the zip's directory is read once, cached
            sys.path_importer_cache[entry] = SingleReadZipImporter(entry)


def _site_of_this_pyz() -> str | None:
    """The extraction's site-packages: the sys.path folder holding our .pth (site.addsitedir
    appends it before it runs the .pth files, so it is the last one that has it)."""
    for entry in reversed(sys.path):
        if os.path.isfile(os.path.join(entry, PTH_NAME)):
            return entry
    return None


_site = _site_of_this_pyz()
if _site is not None:
    install(_site)
