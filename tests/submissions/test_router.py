"""Submission routes in-process: the contract's answers, authorisation, and error envelopes
(the same sequence runs against a real `serve` in tests/e2e/test_uploads_serve.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers.factories import bearer, make_archive, make_user, store_part
from tests.helpers.zrc import ZrcDriver, ZrcError
from zerospeech_api.db.engine import Database
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage, uploads


def driver(client: TestClient, db: Database, settings: Settings, tmp_path: Path, user=None):
    user = user or make_user(db, settings)
    token = bearer(db, settings, user)["Authorization"].split()[1]
    return ZrcDriver(
        "http://testserver",
        tmp_path / f"zrc-{user.username}",
        token=token,
        username=user.username,
        part_size=40_000,
        http=client,
    )


def test_contract_sequence_in_process(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    zrc = driver(client, db, settings, tmp_path)
    zrc.create_model()
    zrc.prepare(make_archive(tmp_path / "sub.zip", payload_bytes=100_000), multipart=True)
    created = zrc.create_submission("test-challenge")
    assert created["status"] == "uploading" and created["benchmark"] == "test-challenge"
    assert created["user"] == zrc.state.username and created["auto_eval"] is True
    assert zrc.status() == "uploading"
    last = zrc.upload(order=[2, 0, 1])
    assert last == {"completed": True, "remaining": []}
    assert zrc.wait_status("uploaded") == "uploaded"
    info = client.get(f"/submissions/{zrc.state.submission_id}/info", headers=zrc.headers).json()
    assert info["archive_size"] == Path(zrc.state.archive).stat().st_size
    assert all(p["received"] for p in info["parts"])
    with pytest.raises(ZrcError) as late:  # no longer uploading
        zrc.send(zrc.state.index[0]["filename"], b"x")
    assert late.value.status_code == 409


def test_status_needs_no_token_and_unknown_is_json_404(client: TestClient) -> None:
    response = client.get("/submissions/20240101-aaaaaaaaaaaaaaaa/content/status")
    assert response.status_code == 404 and "no submission" in response.json()["detail"]


def test_authorisation_on_content_and_reads(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    owner = driver(client, db, settings, tmp_path)
    owner.create_model()
    owner.prepare(make_archive(tmp_path / "sub.zip"), multipart=True)
    sid = owner.create_submission("test-challenge")["submission_id"]
    name = owner.state.index[0]["filename"]
    other = make_user(db, settings)
    other_headers = bearer(db, settings, other)
    url = f"/submissions/{sid}/content/add"
    files = {"file": (name, b"abc")}
    assert client.post(url, params={"part_name": name}, files=files).status_code == 401
    forbidden = client.post(url, params={"part_name": name}, files=files, headers=other_headers)
    assert forbidden.status_code == 403
    unknown = client.post(
        "/submissions/20240101-aaaaaaaaaaaaaaaa/content/add",
        params={"part_name": name},
        files=files,
        headers=owner.headers,
    )
    assert unknown.status_code == 404
    missing_name = client.post(url, files=files, headers=owner.headers)
    assert missing_name.status_code == 400 and "part_name" in missing_name.json()["detail"]
    assert client.get(f"/submissions/{sid}/info").status_code == 401
    assert client.get(f"/submissions/{sid}/info", headers=other_headers).status_code == 403
    assert client.get(f"/users/{owner.state.username}/submissions/list").status_code == 401
    listed = client.get(f"/users/{owner.state.username}/submissions/list", headers=other_headers)
    assert listed.status_code == 403
    mine = client.get(f"/users/{owner.state.username}/submissions/list", headers=owner.headers)
    assert [s["submission_id"] for s in mine.json()["submissions"]] == [sid]
    assert client.delete(f"/submissions/{sid}", headers=other_headers).status_code == 403


@pytest.mark.parametrize("raw", ["../../x.zip", "a%2Fb.zip", "%2e%2e%2fx", "%252e%252e%252fx"])
def test_traversal_part_names_are_refused(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path, raw: str
) -> None:
    zrc = driver(client, db, settings, tmp_path)
    zrc.create_model()
    zrc.prepare(make_archive(tmp_path / "sub.zip"), multipart=False)
    sid = zrc.create_submission("test-challenge")["submission_id"]
    response = client.post(
        f"/submissions/{sid}/content/add?part_name={raw}",
        files={"file": ("x", b"data")},
        headers=zrc.headers,
    )
    assert response.status_code == 400
    assert "invalid file name" in response.json()["detail"]
    assert not storage.submission_dir(settings, sid).exists()


def test_delete_removes_rows_and_files(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    zrc = driver(client, db, settings, tmp_path)
    zrc.create_model()
    zrc.prepare(make_archive(tmp_path / "sub.zip", payload_bytes=100_000), multipart=True)
    sid = zrc.create_submission("test-challenge")["submission_id"]
    zrc.upload(limit=1)
    assert storage.parts_dir(settings, sid).is_dir()
    deleted = client.delete(f"/submissions/{sid}", headers=zrc.headers)
    assert deleted.status_code == 200 and deleted.json() == {"submission_id": sid, "deleted": True}
    assert not storage.submission_dir(settings, sid).exists()
    assert client.get(f"/submissions/{sid}/content/status").status_code == 404


def test_owner_cannot_delete_an_uploaded_submission_but_an_admin_can(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    zrc = driver(client, db, settings, tmp_path)
    zrc.create_model()
    zrc.prepare(make_archive(tmp_path / "sub.zip"), multipart=False)
    sid = zrc.create_submission("test-challenge")["submission_id"]
    zrc.upload()
    zrc.wait_status("uploaded")
    refused = client.delete(f"/submissions/{sid}", headers=zrc.headers)
    assert refused.status_code == 409 and "ask an administrator" in refused.json()["detail"]
    admin = bearer(db, settings, make_user(db, settings, admin=True))
    assert client.delete(f"/submissions/{sid}", headers=admin).status_code == 200
    assert not storage.submission_dir(settings, sid).exists()


def test_single_part_may_be_retried_after_a_bad_attempt(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    zrc = driver(client, db, settings, tmp_path)
    zrc.create_model()
    archive = make_archive(tmp_path / "sub.zip")
    zrc.prepare(archive, multipart=False)
    zrc.create_submission("test-challenge")
    with pytest.raises(ZrcError) as bad:
        zrc.send(archive.name, archive.read_bytes()[:-1])
    assert bad.value.status_code == 400 and "MD5 of the received bytes" in bad.value.detail
    assert zrc.send(archive.name, archive) == {"completed": True, "remaining": []}
    assert zrc.wait_status("uploaded") == "uploaded"


def test_declared_length_beyond_the_part_is_refused_before_reading(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    zrc = driver(client, db, settings, tmp_path)
    zrc.create_model()
    zrc.prepare(make_archive(tmp_path / "sub.zip", payload_bytes=100_000), multipart=True)
    zrc.create_submission("test-challenge")
    part = zrc.state.index[0]
    with pytest.raises(ZrcError) as caught:
        zrc.send(part["filename"], b"x" * (part["filesize"] + 200_000))
    assert caught.value.status_code == 400
    assert caught.value.detail == uploads.DECLARED_TOO_BIG.format(
        length=caught.value.detail.split()[1], name=part["filename"], size=part["filesize"]
    )


def test_sending_a_part_again_finishes_an_interrupted_join(
    client: TestClient, db: Database, settings: Settings, tmp_path: Path
) -> None:
    zrc = driver(client, db, settings, tmp_path)
    zrc.create_model()
    zrc.prepare(make_archive(tmp_path / "sub.zip", payload_bytes=100_000), multipart=True)
    sid = zrc.create_submission("test-challenge")["submission_id"]
    folder = Path(zrc.state.parts_dir)
    for part in zrc.state.index:  # acknowledged, but the join never ran (a crash)
        store_part(db, settings, sid, part["filename"], (folder / part["filename"]).read_bytes())
    assert zrc.status() == "uploading"
    first = zrc.state.index[0]["filename"]
    assert zrc.send(first, folder / first) == {"completed": True, "remaining": []}
    assert zrc.wait_status("uploaded") == "uploaded"
