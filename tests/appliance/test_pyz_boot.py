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


def make_pyz(path: Path, main: bytes) -> Path:
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
        archive.writestr("site-packages/hello.py", "def main():\n    print('hello')\n")
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
