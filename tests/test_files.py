"""The one durable write (files.py), the writers that use it, and where package data is."""

from __future__ import annotations

import importlib
import os
import stat
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from zerospeech_api.files import package_path, write_atomically
from zerospeech_api.leaderboards.results import read_results, write_results
from zerospeech_api.mail import Mailer, outbox_dir
from zerospeech_api.settings import Settings


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The inodes os.fsync is called on (the real fsync still runs)."""
    inodes: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        inodes.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return inodes


def test_a_file_is_replaced_whole_privately_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "run" / "supervisord.conf"
    write_atomically(target, "one\n")
    write_atomically(target, b"two\n")
    assert target.read_text() == "two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["supervisord.conf"]
    write_atomically(target, "three\n", mode=0o644)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "export.json"
    write_atomically(target, "old")
    with pytest.raises(TypeError):
        write_atomically(target, 42)  # type: ignore[arg-type]  # fails inside the write
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["export.json"]


def test_the_file_and_its_folder_are_fsynced(tmp_path: Path, synced: list[int]) -> None:
    target = tmp_path / "a" / "file"
    write_atomically(target, "x")
    assert target.stat().st_ino in synced
    assert target.parent.stat().st_ino in synced


def test_results_and_outbox_mails_are_durable(
    make_settings: Callable[..., Settings], synced: list[int]
) -> None:
    # Both were written with a rename but no fsync before files.py.
    settings = make_settings()
    results = settings.data_dir / "submissions" / "s1" / "results.json"
    write_results(results, {"scores.json": {"scores": {"a": 1}}})
    assert read_results(results) == {"scores.json": {"scores": {"a": 1}}}
    assert {results.stat().st_ino, results.parent.stat().st_ino} <= set(synced)

    mailer = Mailer(settings)
    try:
        mailer.send(to="ada@example.org", subject="hello", body="text").result(timeout=30)
    finally:
        mailer.close()
    (mail,) = outbox_dir(settings).glob("*.eml")
    assert stat.S_IMODE(mail.stat().st_mode) == 0o600  # links with tokens: owner only
    assert {mail.stat().st_ino, mail.parent.stat().st_ino} <= set(synced)


def test_package_path_finds_data_in_the_package_folder() -> None:
    templates = package_path("zerospeech_api", "templates")
    assert (templates / "base.html").is_file()
    assert package_path("zerospeech_api.db", "migrations", "env.py").is_file()


def test_package_path_finds_data_extracted_beside_a_zipped_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in the pyz: the package's code in a zip, its data folder in a site-packages on sys.path.
    archive = tmp_path / "app.pyz"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("zr_probe_package/__init__.py", "")
    extracted = tmp_path / "site-packages" / "zr_probe_package" / "templates"
    extracted.mkdir(parents=True)
    (extracted / "page.html").write_text("<p>")
    monkeypatch.syspath_prepend(str(tmp_path / "site-packages"))
    monkeypatch.syspath_prepend(str(archive))
    try:
        found = package_path("zr_probe_package", "templates", "page.html")
        assert found == (extracted / "page.html").resolve()
        assert ".pyz" in importlib.import_module("zr_probe_package").__file__
        with pytest.raises(FileNotFoundError, match="missing.html of the package"):
            package_path("zr_probe_package", "missing.html")
    finally:
        sys.modules.pop("zr_probe_package", None)
