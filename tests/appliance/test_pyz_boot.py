"""packaging/pyz_boot.py: shiv's bootstrap reads the running zip through zipimport, on a small
zip laid out as finish_pyz lays out the pyz (shiv's own bootstrap; the real pyz is in
tests/e2e/test_appliance.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import shiv.bootstrap

ROOT = Path(__file__).resolve().parents[2]
SHIV_BOOTSTRAP = Path(shiv.bootstrap.__file__).parent


def finish_pyz_main() -> tuple[bytes, bytes]:
    """finish_pyz's __main__.py and the shiv one it replaces."""
    spec = importlib.util.spec_from_file_location("finish_pyz", ROOT / "packaging/finish_pyz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MAIN, module.SHIV_MAIN


# Runs the zip argv[1] as `python app.pyz` does (the zip first on sys.path, its __main__ run),
# with argv[2] as sys.argv[0], counting how often a ZipFile reads a zip's directory.
RUN = """
import atexit, sys, zipfile, zipimport
parses = []
real = zipfile.ZipFile._RealGetContents
zipfile.ZipFile._RealGetContents = lambda self: (parses.append(1), real(self))[1]
atexit.register(lambda: print("directory reads:", len(parses)))
pyz, sys.argv = sys.argv[1], [sys.argv[2]]
sys.path.insert(0, pyz)
exec(zipimport.zipimporter(pyz).get_code("__main__"), {"__name__": "__main__"})
"""


def make_pyz(path: Path, main: bytes, hello: str = "def main():\n    print('hello')\n") -> Path:
    """A shiv zip: its bootstrap, environment.json, one module in site-packages/ (extracted on
    the first run, the entry point), and our boot helper."""
    environment = {
        "shiv_version": "1.0.8",
        "built_at": "1980-01-01 00:00:00",
        "build_id": "a" * 64,
        "entry_point": "hello:main",
        "compile_pyc": False,
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for source in sorted(SHIV_BOOTSTRAP.glob("*.py")):
            archive.write(source, f"_bootstrap/{source.name}")
        archive.write(ROOT / "packaging" / "pyz_boot.py", "_zerospeech_boot.py")
        archive.writestr("environment.json", json.dumps(environment))
        archive.writestr("site-packages/hello.py", hello)
        archive.writestr("__main__.py", main)
    return path


def run(pyz: Path, shiv_root: Path, argv0: Path | None = None) -> list[str]:
    """Run `pyz` with `argv0` (default: itself) as sys.argv[0]; its output lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIV_")}
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(pyz), str(argv0 or pyz)],
        env={**env, "SHIV_ROOT": str(shiv_root)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("which", ["ours", "shiv"])
def test_a_warm_start_reads_the_zip_directory_only_through_zipimport(
    tmp_path: Path, which: str
) -> None:
    ours, shivs = finish_pyz_main()
    pyz = make_pyz(tmp_path / "app.pyz", ours if which == "ours" else b"# shiv\n" + shivs)
    first = run(pyz, tmp_path / "shiv")
    extracted = tmp_path / "shiv" / f"app.pyz_{'a' * 64}" / "site-packages" / "hello.py"
    assert extracted.is_file()  # the first run extracts through a real ZipFile
    assert first == ["hello", "directory reads: 1"]
    warm = run(pyz, tmp_path / "shiv")
    # shiv's own bootstrap reads the whole directory again on every start; ours does not.
    assert warm == ["hello", f"directory reads: {0 if which == 'ours' else 1}"]


def test_a_zip_run_under_another_name_is_left_to_shiv(tmp_path: Path) -> None:
    """sys.argv[0] naming another file than the zip the bootstrap came from: shiv's own code
    reads that file, as without the helper."""
    pyz = make_pyz(tmp_path / "app.pyz", finish_pyz_main()[0])
    other = tmp_path / "other.pyz"
    other.write_bytes(pyz.read_bytes())
    for _ in range(2):  # first run, then warm
        assert run(pyz, tmp_path / "shiv", argv0=other) == ["hello", "directory reads: 1"]
    assert (tmp_path / "shiv" / f"other.pyz_{'a' * 64}").is_dir()


# The entry point of a zip laid out as finish_pyz lays out the pyz: markupsafe's Python files
# in the zip, its compiled module to extract; it prints where that module was loaded from and,
# once the extraction is over, where it says it is.
HELLO = """
import sys
import markupsafe._speedups

def main():
    print("loaded", markupsafe._speedups.__file__)
    sys.modules["_zerospeech_boot"].finish_extraction()
    print("now", markupsafe._speedups.__file__)
"""


def make_finished_pyz(path: Path) -> Path:
    """make_pyz's zip with finish_pyz's additions: our import helper at the root, a package
    imported from the zip whose compiled module is extracted, and the list of what to extract
    (which lets the first run extract beside the imports)."""
    make_pyz(path, finish_pyz_main()[0], hello=HELLO)
    markupsafe = Path(importlib.util.find_spec("markupsafe").origin).parent  # type: ignore[arg-type]
    compiled = next(markupsafe.glob("_speedups.*.so"))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.write(ROOT / "packaging" / "pyz_imports.py", "_zerospeech_imports.py")
        archive.writestr("site-packages/_zerospeech_imports.pth", "import _zerospeech_imports\n")
        for source in markupsafe.glob("*.py"):
            archive.write(source, f"markupsafe/{source.name}")
        archive.write(compiled, f"site-packages/markupsafe/{compiled.name}")
        members = [n for n in archive.namelist() if n.startswith("site-packages/")]
        archive.writestr("_zerospeech_extracted.json", json.dumps(sorted(set(members))))
    return path


def start(pyz: Path, shiv_root: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIV_")}
    return subprocess.Popen(
        [sys.executable, str(pyz)],
        env={**env, "SHIV_ROOT": str(shiv_root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_first_run_extracts_beside_the_imports_and_ends_with_the_final_folder(
    tmp_path: Path,
) -> None:
    pyz = make_finished_pyz(tmp_path / "app.pyz")
    folder = tmp_path / "shiv" / f"app.pyz_{'a' * 64}"
    # Three first runs at once: one extracts, the others wait on shiv's lock and use its work.
    runs = [start(pyz, tmp_path / "shiv") for _ in range(3)]
    outputs = [run.communicate(timeout=60) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
        loaded, now = (line.split(" ", 1) for line in out.splitlines())
        final = folder / "site-packages" / "markupsafe"
        # Loaded as soon as its file was written: from the temporary folder, or the final one
        # if the extraction was over; after it, the module names the final folder.
        assert Path(loaded[1]).parent in (final, Path(f"{folder}.tmp/site-packages/markupsafe"))
        assert Path(now[1]).parent == final and Path(now[1]).is_file()
    assert (folder / "site-packages" / "hello.py").is_file()
    assert not Path(f"{folder}.tmp").exists()
    # Warm: nothing to wait for.
    out, err = start(pyz, tmp_path / "shiv").communicate(timeout=60)
    assert out.splitlines() == [
        f"loaded {folder}/site-packages/markupsafe/{Path(now[1]).name}"
    ] * 1 + [f"now {folder}/site-packages/markupsafe/{Path(now[1]).name}"], err


def test_a_failed_extraction_says_so(tmp_path: Path) -> None:
    pyz = make_finished_pyz(tmp_path / "app.pyz")
    folder = tmp_path / "shiv" / f"app.pyz_{'a' * 64}"
    folder.parent.mkdir()
    Path(f"{folder}.tmp").write_text("in the way")  # the temporary folder cannot be made
    run = start(pyz, tmp_path / "shiv")
    _out, err = run.communicate(timeout=60)
    assert run.returncode != 0
    assert f"could not be extracted into {folder}" in err, err
    assert not folder.exists()
