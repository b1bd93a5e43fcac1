"""Client-sent names never become paths: the allowlist for file names and in-archive paths."""

from __future__ import annotations

import pytest

from zerospeech_api.submissions import storage

GOOD = ["sub.zip", "sub_0001.zip", "sub_1.zip", "my submission (2).zip", "Überprüfung-é.zip"]
BAD = [
    "",
    ".",
    "..",
    "../../x.zip",
    "a/b.zip",
    "a\\b.zip",
    "%2e%2e%2fx",
    ".hidden",
    " lead",
    "trail ",
    "a..b",
    "nul\x00byte",
    "new\nline",
    "tab\tname",
    "del\x7f",
    "a&b.zip",
    "a#b.zip",
    "a+b.zip",
    "a?b.zip",
    "x" * (storage.MAX_NAME_LENGTH + 1),
]


@pytest.mark.parametrize("name", GOOD)
def test_plain_names_pass(name: str) -> None:
    assert storage.check_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_unsafe_names_are_refused(name: str) -> None:
    assert not storage.is_safe_name(name)
    with pytest.raises(storage.UnsafeName, match="invalid file name"):
        storage.check_name(name)


@pytest.mark.parametrize("path", ["", "scores/leaderboard.json", "a/b c/d.json"])
def test_entry_paths(path: str) -> None:
    assert storage.check_entry_path(path) == path


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "scores/../../x", "scores//x", "scores/", "a\\b", "./x", "x" * 501]
)
def test_bad_entry_paths(path: str) -> None:
    with pytest.raises(storage.UnsafeName, match="invalid leaderboard path"):
        storage.check_entry_path(path)


def test_paths_derive_from_ids_only(make_settings) -> None:
    settings = make_settings()
    path = storage.part_path(settings, "20240101-abcdef", 3)
    assert path == settings.data_dir / "submissions" / "20240101-abcdef" / "parts" / "3.part"
    for bad in ("../x", "a/b", "x\n", ""):
        with pytest.raises(ValueError):
            storage.submission_dir(settings, bad)
    with pytest.raises(ValueError):
        storage.part_path(settings, "ok", -1)
