"""pyz helpers outside a pyz, and cleanup of old extractions (the real pyz is in tests/e2e)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers.processes import cli_command
from tests.helpers.pyz import FORK_PROBE
from zerospeech_api.appliance import pyz

OLD, IN_USE, LOCKED, CURRENT = ("1" * 64, "2" * 64, "3" * 64, "4" * 64)


def extraction(root: Path, build: str, package: str = "zerospeech_api") -> Path:
    path = root / f"zerospeech-api.pyz_{build}"
    (path / "site-packages" / package).mkdir(parents=True)
    (root / f".{path.name}_lock").touch()
    return path


def test_outside_a_pyz_the_program_is_this_interpreter_and_module() -> None:
    assert pyz.archive_path() is None
    assert pyz.build_id() is None
    assert pyz.program_command() == [sys.executable, "-m", "zerospeech_api"]


def test_shiv_root_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SHIV_ROOT", str(tmp_path))
    assert pyz.shiv_root() == tmp_path
    monkeypatch.delenv("SHIV_ROOT")
    assert pyz.shiv_root() == Path("~/.shiv").expanduser()


def test_cleanup_removes_only_unused_zerospeech_extractions(tmp_path: Path) -> None:
    root = tmp_path / "shiv root"
    old = extraction(root, OLD)
    in_use = extraction(root, IN_USE)
    locked = extraction(root, LOCKED)
    other_app = extraction(root, "5" * 64, package="someone_else")
    half = root / f"zerospeech-api.pyz_{OLD[:-1]}6.tmp"  # an interrupted extraction
    (half / "site-packages" / "zerospeech_api").mkdir(parents=True)

    # A live process working inside an extraction keeps it; so does shiv's lock being held.
    holder = subprocess.Popen(["sleep", "60"], cwd=in_use / "site-packages")
    lock_fd = os.open(root / f".{locked.name}_lock", os.O_RDWR)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        env = {**os.environ, "SHIV_ROOT": str(root)}
        result = subprocess.run(
            [*cli_command(), "cleanup-extractions"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        holder.kill()
        holder.wait()
        os.close(lock_fd)
    assert not old.exists() and not half.exists()
    assert not (root / f".{old.name}_lock").exists()
    assert in_use.exists() and locked.exists() and other_app.exists()
    assert "kept (in use)" in result.stdout and "kept (locked)" in result.stdout
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(
        [in_use.name, locked.name, other_app.name]
    )


def test_dry_run_removes_nothing(tmp_path: Path) -> None:
    old = extraction(tmp_path, OLD)
    env = {**os.environ, "SHIV_ROOT": str(tmp_path)}
    result = subprocess.run(
        [*cli_command(), "cleanup-extractions", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "would remove" in result.stdout
    assert old.exists()


FORK_CHECK = """
import importlib.metadata, os, sys, zipfile
from pathlib import Path

from zerospeech_api.appliance import pyz

archive, upgrade, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path.insert(0, str(archive))
importlib.metadata.version("demo")  # as the gunicorn master does: the zip stays open, cached
held = zipfile.ZipFile(archive)  # and any other reader kept open before a fork
if mode == "private":
    pyz.keep_private_after_fork(archive)
identity = os.stat(archive).st_dev, os.stat(archive).st_ino
os.replace(upgrade, archive)  # a new pyz installed meanwhile: the children still read this one
print(probe(identity, lambda: held.read("demo-1.0.dist-info/METADATA").endswith(b"1.0\\n")))
"""


def demo_zip(path: Path, version: str) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("demo-1.0.dist-info/METADATA", f"Name: demo\nVersion: {version}\n")
        archive.writestr("demo/__init__.py", "x = 1\n" * 5000)  # the offsets have room to move
    return path


def test_a_forked_child_reads_the_archive_through_its_own_open_file(tmp_path: Path) -> None:
    """Workers forked by the gunicorn master must not share its file offset on the pyz: without
    keep_private_after_fork a child moves the parent's offset (the zlib errors of issue 9)."""
    outcomes = {}
    for mode in ("shared", "private"):
        archive = demo_zip(tmp_path / f"{mode}.pyz", "1.0")
        upgrade = demo_zip(tmp_path / f"{mode}-upgrade.pyz", "2.0")
        result = subprocess.run(
            [sys.executable, "-c", FORK_PROBE + FORK_CHECK, str(archive), str(upgrade), mode],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        outcomes[mode] = result.stdout.strip()
    # Inherited as is, the descriptors are shared (the check can see it); made private, not.
    assert outcomes == {"shared": "shared", "private": "private"}


READ_MEMBER = """
import sys, zipfile
from pathlib import Path
from zerospeech_api.appliance import pyz
archive = sys.argv[1]
sys.path.insert(0, archive)
import mod  # imported from the zip: its zipimporter holds the zip's directory

def parse_again(self):
    raise AssertionError("the zip's directory was read again")

zipfile.ZipFile._RealGetContents = parse_again
print(pyz.read_member(Path(archive).resolve(), "environment.json").decode())
"""


def test_a_member_of_the_running_zip_is_read_without_reading_its_directory_again(
    tmp_path: Path,
) -> None:
    """`version` reads the build id from the pyz: through the zipimporter that already indexed
    it, not a new zipfile.ZipFile (tens of milliseconds for the pyz's thousands of entries)."""
    archive = tmp_path / "app.pyz"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("mod.py", "x = 1\n")
        zipped.writestr("environment.json", '{"build_id": "abc"}')
    result = subprocess.run(
        [sys.executable, "-c", READ_MEMBER, str(archive)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '{"build_id": "abc"}'
