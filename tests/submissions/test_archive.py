"""Safe extraction: every unsafe archive is refused with a reason and nothing is left behind."""

from __future__ import annotations

import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers.disk import run_on_small_disk
from tests.helpers.factories import many_entries_zip, zip_bytes
from zerospeech_api.submissions import archive as u


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


MEASURE = """
import resource, sys
from pathlib import Path
from zerospeech_api.submissions import archive as u
archive, destination = Path(sys.argv[1]), Path(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    u.unpack(archive, destination, max_bytes=10**9, max_files=200_000)
    outcome = "unpacked"
except u.UnpackError as exc:
    outcome = exc.reason
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(grown // 1024, outcome)
"""


def test_a_hostile_directory_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    # ~50 MB of central directory: 255,000 tiny entries. zipfile builds a ZipInfo for each before
    # any cap applies (~120 MiB here, 450 MiB in the issue); streaming stops at the cap.
    archive = tmp_path / "many.zip"
    assert many_entries_zip(archive, 255_000, name_length=60) > 45_000_000
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(archive), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
    )
    grown_mib, reason = result.stdout.split(" ", 1)
    assert reason.startswith(u.TOO_MANY_FILES)
    assert int(grown_mib) < 32, result.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a" * 256 + ".txt", u.OVERLONG),
        ("/".join(["d" * 200] * 6) + "/x.txt", u.OVERLONG),
        ("/".join(["d"] * (u.MAX_DEPTH + 1)) + "/x.txt", u.TOO_DEEP),
    ],
)
def test_overlong_and_deep_paths_are_the_archives_fault(tmp_path: Path, name, reason) -> None:
    with pytest.raises(u.UnpackError) as caught:
        extract(tmp_path, zip_bytes({name: "x"}))
    assert caught.value.reason.startswith(reason)
    assert not (tmp_path / "sub" / "unpacked.partial").exists()


@pytest.mark.parametrize(
    "members",
    [{"a": "file", "a/b.txt": "inside a file?"}, {"a/b.txt": "x", "a": "file over a folder"}],
)
def test_a_file_and_a_folder_of_the_same_name_are_the_archives_fault(tmp_path, members) -> None:
    with pytest.raises(u.UnpackError) as caught:
        extract(tmp_path, zip_bytes(members))
    assert caught.value.reason.startswith((u.PATH_CONFLICT, u.DUPLICATE))


def test_not_enough_room_is_the_servers_fault_not_the_archives(tmp_path: Path) -> None:
    source = tmp_path / "a.zip"
    source.write_bytes(zip_bytes({"zeros.bin": b"\0" * 3_000_000}))
    with pytest.raises(u.NoSpace, match=u.NO_SPACE):  # declared sizes already too large
        u.unpack(source, tmp_path / "out", max_bytes=10**9, max_files=10, room=1_000_000)
    forged = tmp_path / "forged.zip"
    forged.write_bytes(_forge_sizes(source.read_bytes(), 100))
    with pytest.raises(u.NoSpace, match=u.NO_SPACE):  # counted on the bytes actually written
        u.unpack(forged, tmp_path / "out", max_bytes=10**9, max_files=10, room=1_000_000)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    # The participant's own cap still makes it invalid, whatever the room.
    with pytest.raises(u.UnpackError, match=u.TOO_LARGE):
        u.unpack(source, tmp_path / "out", max_bytes=1_000_000, max_files=10, room=10**12)


@pytest.mark.parametrize(
    "method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]
)
def test_every_zip_compression_is_read_in_chunks(tmp_path: Path, method: int) -> None:
    content = bytes(range(256)) * 20_000 + b"\0" * 3_000_000  # over several 1 MiB chunks
    stats = extract(tmp_path, zip_bytes({"d/big.bin": content, "e.txt": ""}, compression=method))
    assert stats.files == 2 and stats.bytes == len(content)
    assert (tmp_path / "sub/unpacked/d/big.bin").read_bytes() == content


def test_damaged_data_and_unknown_methods_are_the_archives_fault(tmp_path: Path) -> None:
    data = bytearray(zip_bytes({"x.txt": b"hello world " * 1000}))
    data[60:80] = b"\xff" * 20  # inside the deflate stream
    with pytest.raises(u.UnpackError, match=u.CORRUPT):
        extract(tmp_path, bytes(data))
    unknown = bytearray(zip_bytes({"x.txt": "x"}, compression=zipfile.ZIP_STORED))
    struct.pack_into("<H", unknown, unknown.find(b"PK\x01\x02") + 10, 99)
    with pytest.raises(u.UnpackError, match=u.UNSUPPORTED):
        extract(tmp_path, bytes(unknown))


FILL_DURING_UNPACK = """
import sys
from pathlib import Path
from zerospeech_api.submissions import archive as u
archive, mount = Path(sys.argv[1]), Path(sys.argv[2])
filled = []

def fill_the_disk() -> bool:
    # Another writer takes the rest of the disk while the archive is being unpacked.
    if not filled:
        filled.append(1)
        try:
            with open(mount / "filler", "wb") as handle:
                while True:
                    handle.write(b"\\0" * 65536)
        except OSError:
            pass
    return False

try:
    u.unpack(archive, mount / "unpacked", max_bytes=10**9, max_files=100, room=10**9,
             should_stop=fill_the_disk)
    print("unpacked")
except u.NoSpace as exc:
    print("nospace", exc.reason)
(mount / "filler").unlink()
print("left", sorted(p.name for p in mount.iterdir()))
"""


def test_a_real_enospc_is_reported_as_no_space_and_leaves_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({f"f{i}.bin": bytes(range(256)) * 4000 for i in range(8)}))
    mount = tmp_path / "small"
    mount.mkdir()
    result = run_on_small_disk(
        mount, [sys.executable, "-c", FILL_DURING_UNPACK, str(archive), str(mount)]
    )
    assert result.stdout.splitlines()[0].startswith(f"nospace {u.NO_SPACE}"), result.stdout
    assert result.stdout.splitlines()[1] == "left []"
