"""A full disk for real (a small tmpfs is the data folder, with SQLite in it on that backend):
every write answers 507 with a detail, nothing is corrupted or dropped, the upload resumes and a
join that found no room says why in the submission's log and is retried."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from tests.helpers.disk import (
    assert_intact,
    empty_wal,
    fill,
    free_up,
    send_unsized,
    small_filesystem,
    temp_files,
)
from tests.helpers.factories import (
    bearer,
    create_submission,
    events_of,
    make_archive,
    make_model,
    make_user,
    model_info,
    status_of,
    store_part,
    submission_body,
)
from tests.helpers.processes import wait_for
from tests.helpers.zrc import ZrcDriver, ZrcError, md5_file
from zerospeech_api.db.engine import Database
from zerospeech_api.errors import NO_SPACE_DETAIL
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import assembly, storage

PART = 256 * 1024


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "disk", size="8m") as path:
        yield path


@pytest.fixture
def recovery_seconds() -> float:
    return 0.2


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings],
    migrated_database_url: str,
    disk: Path,
    recovery_seconds: float,
) -> Settings:
    url = make_url(migrated_database_url)
    if url.get_backend_name() == "sqlite":
        # In the data folder, as the appliance's default: its writes meet the full disk too.
        shutil.copyfile(str(url.database), disk / "zerospeech.db")
        migrated_database_url = ""
    return make_settings(
        data_dir=disk,
        database_url=migrated_database_url,
        upload_reserve_bytes=0,
        upload_recovery_seconds=recovery_seconds,
    )


@pytest.fixture
def new_driver(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path
) -> Callable[[str], ZrcDriver]:
    """zrc drivers over the in-process app, one user; archives stay off the small disk."""
    user = make_user(db, settings)
    token = bearer(db, settings, user)["Authorization"].split()[1]

    def factory(name: str) -> ZrcDriver:
        return ZrcDriver(
            "http://testserver",
            tmp_path / name,
            token=token,
            username=user.username,
            part_size=PART,
            http=client,
        )

    return factory


def start(zrc: ZrcDriver, archive: Path, *, multipart: bool = True) -> str:
    zrc.create_model()
    zrc.prepare(archive, multipart=multipart)
    return str(zrc.create_submission("test-challenge")["submission_id"])


def test_writes_on_a_full_disk_get_507_and_the_upload_resumes(
    client: TestClient,
    db: Database,
    settings: Settings,
    disk: Path,
    tmp_path: Path,
    new_driver: Callable[[str], ZrcDriver],
) -> None:
    zrc = new_driver("multi")
    sid = start(zrc, make_archive(tmp_path / "multi.zip", payload_bytes=3 * PART - 4096))
    single = new_driver("single")
    single_id = start(
        single, make_archive(tmp_path / "one.zip", payload_bytes=PART), multipart=False
    )
    zrc.upload(limit=1)
    fill(disk, leave=PART // 2)

    # Announced parts are refused before their body is read.
    with pytest.raises(ZrcError) as refused:
        zrc.upload(limit=1)
    assert refused.value.status_code == 507
    assert refused.value.detail == storage.NO_ROOM.format(needed=PART)

    # A chunked single-part upload announces no size: the disk fills up while it streams.
    archive = Path(single.state.archive)
    streamed = send_unsized(client, single_id, archive, single.headers, chunk=65536)
    assert streamed.status_code == 507
    assert streamed.json() == {"detail": NO_SPACE_DETAIL}
    assert temp_files(settings) == []

    if db.is_sqlite:  # any database write meets the full disk too
        empty_wal(db)
        fill(disk)
        created = client.post(
            f"/users/{zrc.state.username}/models/create",
            params={"author_name": "x"},
            json=model_info(),
            headers=zrc.headers,
        )
        assert created.status_code == 507
        assert created.json() == {"detail": NO_SPACE_DETAIL}

    free_up(disk)
    assert_intact(db)
    assert zrc.status() == "uploading" and single.status() == "uploading"
    assert zrc.resume() == {"completed": True, "remaining": []}
    assert single.resume() == {"completed": True, "remaining": []}
    for driver, submission_id in ((zrc, sid), (single, single_id)):
        assert driver.wait_status("uploaded", "invalid") == "uploaded"
        archive_path = storage.archive_path(settings, submission_id)
        assert md5_file(archive_path) == driver.state.archive_hash
    assert temp_files(settings) == []


FAILED = assembly.JOIN_FAILED.format(reason=assembly.NO_DISK_SPACE)


@pytest.mark.parametrize(
    ("retry", "recovery_seconds"), [("periodic recovery", 0.2), ("a repeated part", 3600)]
)
def test_a_join_without_room_says_why_and_is_retried(
    client: TestClient,
    db: Database,
    settings: Settings,
    disk: Path,
    tmp_path: Path,
    new_driver: Callable[[str], ZrcDriver],
    retry: str,
) -> None:
    zrc = new_driver("join")
    sid = start(zrc, make_archive(tmp_path / "join.zip", payload_bytes=3 * PART - 4096))
    parts = zrc.pending()
    zrc.upload(limit=2)
    # Room for the last part, not for the archive joined next to the parts.
    fill(disk, leave=PART + PART // 2)
    assert zrc.upload() == {"completed": True, "remaining": []}

    wait_for(lambda: FAILED in [e.message for e in events_of(db, sid)], what="the failure")
    assert zrc.status() == "uploading"
    for position, part in enumerate(parts):
        stored = storage.part_path(settings, sid, position).read_bytes()
        assert hashlib.md5(stored).hexdigest() == part.filehash  # kept, intact
    # Every retry while the disk stays full fails the same way; the log says it once.
    for _ in range(2):
        with pytest.raises(assembly.JoinFailed, match=assembly.NO_DISK_SPACE):
            assembly.join_submission(settings=settings, db=db, submission_id=sid)
    assert [e.message for e in events_of(db, sid)].count(FAILED) == 1
    assert temp_files(settings) == []

    free_up(disk)
    if retry == "a repeated part":
        assert zrc.status() == "uploading"  # no periodic pass in this test's time
        zrc.send(parts[0].filename, Path(zrc.state.parts_dir) / parts[0].filename)
    assert zrc.wait_status("uploaded", "invalid") == "uploaded"
    assert md5_file(storage.archive_path(settings, sid)) == zrc.state.archive_hash
    assert_intact(db)


def test_a_disk_that_fills_up_mid_join(
    db: Database, settings: Settings, disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = [os.urandom(PART) for _ in range(3)]
    index = [
        {"filename": f"p{n}.zip", "filesize": PART, "filehash": hashlib.md5(c).hexdigest()}
        for n, c in enumerate(chunks)
    ]
    user = make_user(db, settings)
    data = submission_body(
        make_model(db, user), index=index, hash=hashlib.md5(b"".join(chunks)).hexdigest()
    )
    submission_id = create_submission(db, settings, user, data).id
    for entry, chunk in zip(index, chunks, strict=True):
        store_part(db, settings, submission_id, entry["filename"], chunk)
    copy = assembly._copy_parts

    def someone_else_writes_meanwhile(*args: object) -> tuple[str, int]:
        fill(disk, leave=PART)  # after the room check: the copy runs out of space half-way
        return copy(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(assembly, "_copy_parts", someone_else_writes_meanwhile)
    with pytest.raises(assembly.JoinFailed) as failed:
        assembly.join_submission(settings=settings, db=db, submission_id=submission_id)
    assert failed.value.out_of_space
    assert events_of(db, submission_id)[-1].message == FAILED
    assert status_of(db, submission_id) == "uploading"
    assert temp_files(settings) == []  # the half archive went first (and made room for the log)

    monkeypatch.setattr(assembly, "_copy_parts", copy)
    free_up(disk)
    assert assembly.join_submission(settings=settings, db=db, submission_id=submission_id) == (
        "uploaded"
    )
    assert storage.archive_path(settings, submission_id).read_bytes() == b"".join(chunks)
    assert_intact(db)
