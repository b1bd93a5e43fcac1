"""Safe extraction: every unsafe archive is refused with a reason and nothing is left behind."""

from __future__ import annotations

import stat
import struct
import zipfile
from pathlib import Path

import pytest

from tests.helpers.evaluation import zip_bytes
from zerospeech_api.evaluation import unpack as u


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def extract(tmp_path: Path, archive: bytes, **caps: int) -> u.UnpackStats:
    source = tmp_path / "sub" / "archive.zip"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(archive)
    return u.unpack(
        source,
        tmp_path / "sub" / "unpacked",
        max_bytes=caps.get("max_bytes", 10_000_000),
        max_files=caps.get("max_files", 100),
    )


def test_a_normal_archive_unpacks(tmp_path: Path) -> None:
    stats = extract(tmp_path, zip_bytes({"meta.yaml": "a: 1\n", "scores/leaderboard.json": "{}"}))
    assert stats.files == 2 and stats.bytes == len("a: 1\n") + 2
    assert (tmp_path / "sub/unpacked/scores/leaderboard.json").read_text() == "{}"


@pytest.mark.parametrize(
    ("members", "symlinks", "reason"),
    [
        ({"../evil.txt": "x"}, None, u.PARENT_REFERENCE),
        ({"scores/../../evil.txt": "x"}, None, u.PARENT_REFERENCE),
        ({"..\\evil.txt": "x"}, None, u.PARENT_REFERENCE),
        ({"/tmp/evil.txt": "x"}, None, u.ABSOLUTE_PATH),
        ({"C:/evil.txt": "x"}, None, u.ABSOLUTE_PATH),
        ({"ok.txt": "x"}, {"scores": "/etc"}, u.LINK),
        ({"a\x01b": "x"}, None, u.BAD_NAME),
    ],
)
def test_unsafe_names_and_links_are_refused(tmp_path: Path, members, symlinks, reason) -> None:
    before = files_under(tmp_path)
    with pytest.raises(u.UnpackError) as caught:
        extract(tmp_path, zip_bytes(members, symlinks=symlinks))
    assert caught.value.reason.startswith(reason)
    assert files_under(tmp_path) - before == {"sub", "sub/archive.zip"}


def test_device_files_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "dev.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("dev/null")
        info.external_attr = (stat.S_IFCHR | 0o666) << 16
        zf.writestr(info, b"")
    with pytest.raises(u.UnpackError, match=u.SPECIAL_FILE):
        extract(tmp_path, archive.read_bytes())


def test_zip_bomb_is_refused(tmp_path: Path) -> None:
    bomb = zip_bytes({"zeros.bin": b"\0" * 20_000_000})
    assert len(bomb) < 100_000  # small file, huge unpacked size
    with pytest.raises(u.UnpackError, match=u.TOO_LARGE):
        extract(tmp_path, bomb, max_bytes=1_000_000)
    assert not (tmp_path / "sub" / "unpacked").exists()
    assert not (tmp_path / "sub" / "unpacked.partial").exists()


def _forge_sizes(archive: bytes, size: int) -> bytes:
    """Rewrite every uncompressed-size field to `size` (headers lying about the content)."""
    data = bytearray(archive)
    local = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, size)
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, size)
    return bytes(data)


def test_headers_that_understate_the_size_are_not_trusted(tmp_path: Path) -> None:
    forged = _forge_sizes(zip_bytes({"zeros.bin": b"\0" * 5_000_000}), 100)
    with pytest.raises(u.UnpackError):
        extract(tmp_path, forged, max_bytes=1_000_000)
    assert not (tmp_path / "sub" / "unpacked").exists()


def test_too_many_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(u.UnpackError, match=u.TOO_MANY_FILES):
        extract(tmp_path, zip_bytes({f"f{i}.txt": "x" for i in range(11)}), max_files=10)


def test_duplicates_garbage_and_previous_content(tmp_path: Path) -> None:
    with pytest.raises(u.UnpackError, match=u.NOT_A_ZIP):
        extract(tmp_path, b"this is not a zip")
    twice = zip_bytes({"a.txt": "1", "./a.txt": "2"})
    with pytest.raises(u.UnpackError, match=u.DUPLICATE):
        extract(tmp_path, twice)
    # A re-run replaces an earlier unpacked folder entirely.
    stale = tmp_path / "sub" / "unpacked" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    extract(tmp_path, zip_bytes({"new.txt": "n"}))
    assert files_under(tmp_path / "sub" / "unpacked") == {"new.txt"}


def test_read_member_reads_one_file_with_the_same_rules(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"scores/x.json": "{}"}, symlinks={"scores/link.json": "/etc"}))
    assert u.read_member(archive, "scores/x.json", max_bytes=100) == b"{}"
    assert u.read_member(archive, "scores/link.json", max_bytes=100) is None
    assert u.read_member(archive, "missing", max_bytes=100) is None
    with pytest.raises(u.UnpackError):
        u.read_member(archive, "../x", max_bytes=100)
