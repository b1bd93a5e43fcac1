"""The pyz layout's hand-kept list (packaging/finish_pyz.py): no package of the runtime set that
reads its own files is left inside the zip, where reading them by path fails."""

from __future__ import annotations

import importlib.util
import re
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "packaging" / "requirements.lock"
CODE_SUFFIXES = {".py", ".pyc", ".pyi", ".pyx", ".pxd", ".pxi", ".so", ".pyd"}
# build.sh removes these folders before the pyz is made.
NOT_SHIPPED = {"tests", "testing", "__pycache__"}
# How a package finds a file of its own: by its module's path, or as a package resource.
READS_OWN_FILES = re.compile(
    r"__file__|importlib\.resources|from importlib import resources|importlib_resources"
    r"|pkgutil\.get_data|pkg_resources"
)


def finish_pyz() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "finish_pyz", ROOT / "packaging" / "finish_pyz.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runtime_distributions() -> list[Distribution]:
    """The distributions the pyz is built from (packaging/requirements.lock, and this project),
    as installed in this environment."""
    names = [
        re.split(r"[=\s;\[]", line, maxsplit=1)[0]
        for line in LOCK.read_text().splitlines()
        if re.match(r"[A-Za-z0-9]", line)
    ]
    found, missing = [], []
    for name in [*names, "zerospeech-api"]:
        try:
            found.append(distribution(name))
        except PackageNotFoundError:
            missing.append(name)
    assert not missing, f"not installed here, so not checked: {missing}"
    return found


def top_level_packages(dist: Distribution) -> set[str]:
    """The importable top-level packages of a distribution (editable installs included)."""
    # top_level.txt where the installer wrote one (an editable install's file list is its
    # sources, tests included), else the first folder of each installed file.
    names = set((dist.read_text("top_level.txt") or "").split()) or {
        file.parts[0]
        for file in dist.files or []
        if len(file.parts) > 1 and not file.parts[0].endswith((".dist-info", ".data"))
    }
    packages = set()
    for name in names:
        spec = importlib.util.find_spec(name) if name.isidentifier() else None
        if spec is not None and spec.submodule_search_locations:
            packages.add(name)
    return packages


def package_root(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def data_files(package: str) -> list[Path]:
    """The files shipped in `package` that are not code, relative to its folder."""
    root = package_root(package)
    return [
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file()
        and not NOT_SHIPPED & set(p.relative_to(root).parts)
        and p.suffix not in CODE_SUFFIXES
        and ".so." not in p.name
        and p.name != "py.typed"
    ]


def reads_own_files(package: str) -> list[str]:
    """The data files (not code) of `package` that its own code names, if it finds files of its
    own by path or as resources; [] when it does not."""
    root = package_root(package)
    shipped = [p for p in root.rglob("*") if not NOT_SHIPPED & set(p.relative_to(root).parts)]
    data = data_files(package)
    sources = "\n".join(p.read_text(errors="replace") for p in shipped if p.suffix == ".py")
    if not data or not READS_OWN_FILES.search(sources):
        return []
    # A file, or the folder holding it, named as a string ('templates', "version.txt", /ui/).
    names = {part for path in data for part in (path.parts[0], path.name)}
    return sorted(n for n in names if re.search(rf"['\"/]{re.escape(n)}['\"/]", sources))


def readers() -> dict[str, list[str]]:
    """Every package of the runtime set that reads files of its own, with the names it uses."""
    found = {}
    for dist in runtime_distributions():
        for package in top_level_packages(dist):
            named = reads_own_files(package)
            if named:
                found[package] = named
    return found


def test_no_package_that_reads_its_own_files_is_left_in_the_zip() -> None:
    layout = finish_pyz()
    found = readers()
    # What finish_pyz would zip, by its own rule, of a site-packages holding these packages.
    zipped = layout.zipped_tops([f"{layout.SITE}{name}/__init__.py" for name in found])
    reviewed = {*layout.ZIPPED_DATA, *layout.DATA_ON_DISK}
    unreviewed = {name: found[name] for name in zipped if name not in reviewed}
    assert not unreviewed, (
        "these packages read files of their own but would be imported from the zip: add them "
        f"to ON_DISK in packaging/finish_pyz.py, their data folders to DATA_ON_DISK (or, if "
        f"they never read them at run time, the package to ZIPPED_DATA with the reason): "
        f"{unreviewed}"
    )


def test_the_data_files_a_zipped_package_names_are_extracted() -> None:
    # DATA_ON_DISK packages are zipped but for some folders: every data file their code names
    # (or a folder holding it) must be in one of those, which finish_pyz leaves on disk.
    layout = finish_pyz()
    found = readers()
    for package in layout.DATA_ON_DISK:
        on_disk = [
            path.parts
            for path in data_files(package)
            if layout.stays_on_disk(f"{package}/{path.as_posix()}", {package})
        ]
        for name in found[package]:
            assert any(name in parts for parts in on_disk), (package, name)
        # And the code stays in the zip.
        assert not layout.stays_on_disk(f"{package}/__init__.py", {package})


def test_the_finder_sees_the_packages_known_to_read_their_files() -> None:
    # Without this the test above could pass by finding nothing: each entry of ON_DISK is a
    # reader it must find in the real dependency set, and so is each reviewed exception.
    layout = finish_pyz()
    found = readers()
    assert set(layout.ON_DISK) <= set(found), set(layout.ON_DISK) - set(found)
    assert set(layout.DATA_ON_DISK) <= set(found), set(layout.DATA_ON_DISK) - set(found)
    assert set(layout.ZIPPED_DATA) <= set(found), set(layout.ZIPPED_DATA) - set(found)
    assert "templates" in found["zerospeech_api"] and "version.txt" in found["supervisor"]
    assert "fastapi" not in found  # data files it never opens (its .agents notes)
