"""packaging/pyz_imports.py, the import helpers of the pyz, on a small zip laid out as
finish_pyz lays the pyz out (the real pyz is in tests/e2e/test_appliance.py).

Each check runs in a fresh interpreter: the helpers change sys.meta_path and sys.path_hooks.
"""

from __future__ import annotations

import _bisect
import importlib.machinery
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HELPERS = ROOT / "packaging" / "pyz_imports.py"

# Started with the zip first on sys.path, as `python app.pyz` is; the extraction folder is added
# the way shiv's bootstrap adds it (site.addsitedir runs the .pth).
CHECK = """
import importlib.metadata, site, sys, zipfile, zipimport
archive, extracted = sys.argv[1], sys.argv[2]
sys.path.insert(0, archive)
parses, reads = [], []
real_parse, real_read = zipfile.ZipFile._RealGetContents, zipimport._get_data
zipfile.ZipFile._RealGetContents = lambda self: (parses.append(1), real_parse(self))[1]
zipimport._get_data = lambda *args: (reads.append(args[1][0]), real_read(*args))[1]
site.addsitedir(extracted)
import plain
import pkg
location = getattr(pkg._bisect, "__file__", None) or ""  # None: a namespace package
print(location.startswith(extracted) and pkg._bisect.bisect_right([1, 2, 3], 2) == 2)
print(reads.count(archive + "/plain.py"))
print(importlib.metadata.version("demo-pkg"), len(parses))
"""


def make_layout(folder: Path, *, helpers: bool) -> tuple[Path, Path]:
    """A zip with a pure module, a package whose compiled submodule is extracted (and a folder
    of typing stubs named like it, as pydantic_core has) and metadata; and the extraction."""
    archive, extracted = folder / "app.pyz", folder / "site-packages"
    extension = Path(_bisect.__file__)
    (extracted / "pkg").mkdir(parents=True)
    shutil.copy(extension, extracted / "pkg" / extension.name)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("plain.py", "VALUE = 1\n")
        zipped.writestr("pkg/", b"")
        zipped.writestr("pkg/__init__.py", "from . import _bisect\n")
        zipped.writestr("pkg/_bisect/", b"")
        zipped.writestr(
            "pkg/_bisect/__init__.pyi", "def bisect_right(a: list, x: int) -> int: ...\n"
        )
        zipped.writestr("demo_pkg-2.5.dist-info/METADATA", "Name: demo-pkg\nVersion: 2.5\n")
        if helpers:
            zipped.write(HELPERS, "_zerospeech_imports.py")
            index = {"demo_pkg": "demo_pkg-2.5.dist-info"}
            zipped.writestr("_zerospeech_imports.json", json.dumps(index))
    if helpers:
        (extracted / "_zerospeech_imports.pth").write_text("import _zerospeech_imports\n")
    return archive, extracted


def run_check(archive: Path, extracted: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHECK, str(archive), str(extracted)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_helpers_load_extracted_extensions_read_once_and_skip_metadata_scans(
    tmp_path: Path,
) -> None:
    assert importlib.machinery.EXTENSION_SUFFIXES[0] in Path(_bisect.__file__).name
    result = run_check(*make_layout(tmp_path, helpers=True))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == [
        "True",  # pkg._bisect: the compiled module from the extraction, not the stub folder
        "1",  # plain.py read from the zip once (for its spec and its code)
        "2.5 0",  # the version from the zip, and the zip's directory not parsed again
    ]


def test_without_the_helpers_each_of_the_three_goes_wrong(tmp_path: Path) -> None:
    """What the helpers are for, shown by the standard machinery on the same layout."""
    result = run_check(*make_layout(tmp_path, helpers=False))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["False", "2", "2.5 1"]
