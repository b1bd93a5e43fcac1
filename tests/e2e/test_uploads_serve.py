"""The zrc contract against a real `serve` (gunicorn + uvicorn workers): uploads, limits, resume,
concurrency, and recovery after kill -9."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import secrets
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.disk import (
    assert_intact,
    empty_wal,
    fill,
    free_up,
    send_unsized,
    small_filesystem,
)
from tests.helpers.factories import (
    DEFAULT_PASSWORD,
    create_submission,
    make_archive,
    make_benchmark,
    make_model,
    model_info,
    multipart_body,
    store_part,
    submission_body,
)
from tests.helpers.processes import wait_for
from tests.helpers.server import Server, Site
from tests.helpers.zrc import ZrcDriver, ZrcError, md5_file
from zerospeech_api.benchmarks.service import NOT_OPEN, close_benchmark
from zerospeech_api.db.tables import SubmissionStatus, User
from zerospeech_api.errors import NO_SPACE_DETAIL
from zerospeech_api.submissions import storage, uploads

pytestmark = pytest.mark.e2e

MAX_REQUEST = 300_000
PART = 50_000
_open_drivers: list[ZrcDriver] = []


def open_driver(*args: object, **kwargs: object) -> ZrcDriver:
    """A driver closed at the end of the test (its HTTP connections)."""
    driver = ZrcDriver(*args, **kwargs)  # type: ignore[arg-type]
    _open_drivers.append(driver)
    return driver


@pytest.fixture(autouse=True)
def _close_drivers() -> Iterator[None]:
    yield
    while _open_drivers:
        _open_drivers.pop().close()


def start_site(root: Path, extra: dict[str, str] | None = None) -> Site:
    """A site with this module's request limit and `extra` settings (no server yet)."""
    return Site(root, {"ZR_MAX_REQUEST_BYTES": str(MAX_REQUEST), **(extra or {})})


def client_of(site: Site, user: User | None = None, *, name: str = "", **kw: object) -> ZrcDriver:
    """A zrc driver of `user` (a new one by default) with this module's part size."""
    user = user or site.user()
    workdir = site.root / f"client-{user.username}{name}"
    return open_driver(
        site.url,
        workdir,
        token=site.token(user),
        username=user.username,
        part_size=PART,
        **kw,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One server for the tests that do not restart it (each test makes its own users)."""
    built = start_site(tmp_path_factory.mktemp("uploads"))
    try:
        built.start_server()
        yield built
    finally:
        built.close()


def archive(site: Site, name: str, size: int = 160_000, seed: int | None = None) -> Path:
    folder = site.root / f"archives-{secrets.token_hex(4)}"
    folder.mkdir()
    return make_archive(folder / name, payload_bytes=size, seed=seed or random.randrange(10**6))


def assert_uploaded(site: Site, zrc: ZrcDriver) -> None:
    assert zrc.wait_status("uploaded", "invalid") == "uploaded"
    sid = zrc.state.submission_id
    assert sid is not None
    assert md5_file(storage.archive_path(site.settings, sid)) == zrc.state.archive_hash
    # The parts go right after the status commits (kept until then for crash recovery).
    wait_for(lambda: not storage.parts_dir(site.settings, sid).exists())


def test_contract_sequence_multipart_with_login_and_profile(site: Site) -> None:
    user = site.user()
    zrc = open_driver(
        site.server.url,
        site.root / "password-client",
        username=user.email,  # the client accepts a username or an e-mail
        password=DEFAULT_PASSWORD,
        part_size=PART,
    )
    sid = zrc.submit(archive(site, "sub.zip"), "test-challenge", order=[3, 1, 0, 2])
    assert zrc.state.username == user.username
    assert len(zrc.state.index) == 4
    assert_uploaded(site, zrc)
    log = [e.message for e in site.events(sid)]
    assert log[0].startswith("uploading: created by") and "verified" in log[-1]


def test_contract_sequence_single_part(site: Site) -> None:
    zrc = client_of(site)
    zrc.submit(archive(site, "single.zip"), "test-challenge", multipart=False)
    assert_uploaded(site, zrc)


def test_part_names_come_from_the_index(site: Site) -> None:
    # Another version of the client's split library names parts differently.
    zrc = client_of(site, part_name=lambda stem, n: f"{stem}.part-{n}-of-many.zip")
    zrc.submit(archive(site, "named.zip"), "test-challenge")
    assert_uploaded(site, zrc)


def test_resume_after_an_interrupted_upload(site: Site) -> None:
    user = site.user()
    first = client_of(site, user)
    first.benchmark_info("test-challenge")
    first.create_model()
    first.prepare(archive(site, "resume.zip", 200_000))
    first.create_submission("test-challenge")
    assert first.upload(limit=2)["remaining"]  # the client process dies here
    first.close()
    # A later process with a new token picks up where the manifest says.
    second = open_driver(site.server.url, first.workdir, token=site.token(user), part_size=PART)
    assert len(second.pending()) == len(second.state.index) - 2
    assert second.resume() == {"completed": True, "remaining": []}
    assert_uploaded(site, second)


def test_repeated_and_duplicate_hash_parts(site: Site) -> None:
    folder = site.root / "dups"
    folder.mkdir()
    block = os.urandom(PART)
    raw = folder / "dup.zip"
    raw.write_bytes(block + os.urandom(PART) + block + b"tail")
    zrc = client_of(site)
    zrc.create_model()
    parts = zrc.prepare(raw)
    assert parts[0].filehash == parts[2].filehash
    zrc.create_submission("test-challenge")
    assert len(zrc.pending()) == 3  # the client uploads identical bytes once
    first = zrc.send(parts[2].filename, Path(zrc.state.parts_dir) / parts[2].filename)
    assert first["remaining"] == [parts[1].filename, parts[3].filename]
    again = zrc.send(parts[2].filename, Path(zrc.state.parts_dir) / parts[2].filename)
    assert again == first  # a repeat is accepted idempotently
    zrc.state.uploaded.append(parts[2].filehash)
    zrc.upload()
    assert_uploaded(site, zrc)


def test_wrong_bytes_and_unknown_names_are_refused_and_discarded(site: Site) -> None:
    zrc = client_of(site)
    zrc.create_model()
    parts = zrc.prepare(archive(site, "wrong.zip"))
    sid = zrc.create_submission("test-challenge")["submission_id"]
    good = (Path(zrc.state.parts_dir) / parts[0].filename).read_bytes()
    cases = [
        (parts[0].filename, good[:-1] + bytes([good[-1] ^ 1]), "MD5 of the received bytes"),
        (parts[0].filename, good[:-10], "received 49990 bytes, the index says 50000"),
        (parts[0].filename, good + b"extra", "larger than its index entry"),
        ("sub_9999.zip", good, "not in the index"),
    ]
    for name, data, message in cases:
        with pytest.raises(ZrcError) as caught:
            zrc.send(name, data)
        assert caught.value.status_code == 400, (name, caught.value)
        assert message in caught.value.detail, (name, caught.value)
    assert not storage.parts_dir(site.settings, sid).exists()
    assert not [f for f in site.tmp_files() if sid in f]
    zrc.upload()
    assert_uploaded(site, zrc)


@pytest.mark.parametrize("raw", ["../../x.zip", "a/b.zip", "%2e%2e%2fx", "..%2F..%2Fx.zip"])
def test_traversal_names_are_refused(site: Site, raw: str) -> None:
    zrc = client_of(site, name=secrets.token_hex(3))
    zrc.create_model()
    zrc.prepare(archive(site, "trav.zip"))
    sid = zrc.create_submission("test-challenge")["submission_id"]
    with httpx.Client(base_url=site.server.url) as http:
        response = http.post(
            f"/submissions/{sid}/content/add?part_name={raw}",
            files={"file": ("x.zip", b"data")},
            headers=zrc.headers,
        )
        assert response.status_code == 400
        assert "invalid file name" in response.json()["detail"]
        index = [
            {"filename": httpx.URL(f"?n={raw}").params["n"], "filesize": 4, "filehash": "a" * 32}
        ]
        created = http.post(
            f"/users/{zrc.state.username}/submissions/create",
            json=zrc.submission_body("test-challenge", index=index),
            headers=zrc.headers,
        )
        assert created.status_code == 400 and "invalid file name" in created.json()["detail"]
    data = site.settings.data_dir
    assert not (data / "x.zip").exists() and not (data.parent / "x.zip").exists()
    assert not storage.submission_dir(site.settings, sid).exists()


def test_other_users_get_403(site: Site) -> None:
    owner, intruder = client_of(site), client_of(site)
    owner.create_model()
    parts = owner.prepare(archive(site, "mine.zip"))
    sid = owner.create_submission("test-challenge")["submission_id"]
    intruder.state.submission_id = sid
    with pytest.raises(ZrcError) as content:
        intruder.send(parts[0].filename, Path(owner.state.parts_dir) / parts[0].filename)
    assert content.value.status_code == 403
    intruder.create_model()
    intruder.state.model_id = owner.state.model_id  # someone else's model
    intruder.prepare(archive(site, "theirs.zip"))
    with pytest.raises(ZrcError) as create:
        intruder.create_submission("test-challenge")
    assert create.value.status_code == 403 and "belongs to another user" in create.value.detail
    with httpx.Client(base_url=site.server.url) as http:
        for url in (f"/submissions/{sid}/info", f"/users/{owner.state.username}/submissions/list"):
            assert http.get(url, headers=intruder.headers).status_code == 403
        assert http.delete(f"/submissions/{sid}", headers=intruder.headers).status_code == 403


def test_closed_benchmark(site: Site) -> None:
    make_benchmark(site.db, "closed-bench")
    with site.db.transaction() as session:
        close_benchmark(session=session, benchmark_id="closed-bench")
    zrc = client_of(site)
    with pytest.raises(RuntimeError, match="closed"):
        zrc.benchmark_info("closed-bench")  # the client stops here
    zrc.create_model()
    zrc.prepare(archive(site, "late.zip"))
    with pytest.raises(ZrcError) as caught:  # and the server refuses anyway
        zrc.create_submission("closed-bench")
    assert caught.value.status_code == 403
    assert caught.value.detail == NOT_OPEN.format(id="closed-bench", why="closed")


def test_quota_exhausted(site: Site) -> None:
    make_benchmark(site.db, "quota-bench", quota="2/1d")
    zrc = client_of(site)
    zrc.create_model()
    zrc.prepare(archive(site, "q.zip"))
    zrc.create_submission("quota-bench")
    zrc.create_submission("quota-bench")
    with httpx.Client(base_url=site.server.url) as http:
        response = http.post(
            f"/users/{zrc.state.username}/submissions/create",
            json=zrc.submission_body("quota-bench"),
            headers=zrc.headers,
        )
    assert response.status_code == 429
    assert "quota of benchmark quota-bench used up: 2 per 1d" in response.json()["detail"]
    assert 86000 < int(response.headers["retry-after"]) <= 86400


def test_oversize_bodies_get_413_before_reading(site: Site) -> None:
    zrc = client_of(site)
    zrc.create_model()
    zrc.prepare(archive(site, "big.zip"), multipart=False)
    sid = zrc.create_submission("test-challenge")["submission_id"]
    url = f"{site.server.url}/submissions/{sid}/content/add?part_name=big.zip"
    body = os.urandom(MAX_REQUEST + 100_000)
    with httpx.Client() as http:
        declared = http.post(url, content=body, headers=zrc.headers)
        assert declared.status_code == 413
        assert declared.json()["detail"].startswith("request body too large")

        def chunked() -> Iterator[bytes]:
            for i in range(0, len(body), 16_384):
                yield body[i : i + 16_384]

        streamed = http.post(
            url,
            content=chunked(),
            headers={**zrc.headers, "content-type": "multipart/form-data; boundary=b"},
        )
        assert streamed.status_code == 413
        assert streamed.json()["detail"].startswith("request body too large")
    assert zrc.status() == "uploading"
    assert not storage.submission_dir(site.settings, sid).exists()


def test_concurrent_uploads_of_different_submissions(site: Site) -> None:
    drivers = [client_of(site) for _ in range(3)]
    errors: list[BaseException] = []

    def run(zrc: ZrcDriver, n: int) -> None:
        try:
            zrc.submit(archive(site, f"c{n}.zip", 220_000), "test-challenge", multipart=n != 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(z, n)) for n, z in enumerate(drivers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    for zrc in drivers:
        assert_uploaded(site, zrc)


def test_last_two_parts_concurrently_complete_once(site: Site) -> None:
    zrc = client_of(site)
    zrc.create_model()
    parts = zrc.prepare(archive(site, "race.zip", 200_000))
    sid = zrc.create_submission("test-challenge")["submission_id"]
    zrc.upload(limit=len(parts) - 2)
    barrier = threading.Barrier(2)
    answers: list[dict] = []

    def send(part) -> None:
        with ZrcDriver(site.server.url, zrc.workdir, part_size=PART) as own:
            barrier.wait()
            answers.append(own.send(part.filename, Path(zrc.state.parts_dir) / part.filename))

    threads = [threading.Thread(target=send, args=(p,)) for p in parts[-2:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(a["completed"] for a in answers) == [False, True]
    assert_uploaded(site, zrc)
    uploaded = [e for e in site.events(sid) if e.status == SubmissionStatus.UPLOADED]
    assert len(uploaded) == 1


def test_a_client_that_disconnects_mid_part_leaves_nothing(site: Site) -> None:
    zrc = client_of(site)
    zrc.create_model()
    parts = zrc.prepare(archive(site, "gone.zip"))
    sid = zrc.create_submission("test-challenge")["submission_id"]
    data = (Path(zrc.state.parts_dir) / parts[0].filename).read_bytes()
    body, content_type = multipart_body(files={"file": (parts[0].filename, data)})
    host, port = site.server.url.removeprefix("http://").split(":")
    head = (
        f"POST /submissions/{sid}/content/add?part_name={parts[0].filename} HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {zrc.state.token}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + body[: len(body) // 2])
        wait_for(lambda: any(f.startswith(f"upload-{sid}") for f in site.tmp_files()))
    # The server notices, deletes the half part and logs no error.
    wait_for(lambda: not any(f.startswith(f"upload-{sid}") for f in site.tmp_files()))
    assert not storage.parts_dir(site.settings, sid).exists()
    assert "interrupted by the client" in site.server.process.output()
    zrc.upload()
    assert_uploaded(site, zrc)


# --- restarts --------------------------------------------------------------------------------
def kill_9(server: Server) -> None:
    os.killpg(server.process.proc.pid, signal.SIGKILL)
    server.process.proc.wait(10)
    server.stop()


def test_kill_9_mid_upload_then_restart_and_resume(tmp_path: Path) -> None:
    site = start_site(tmp_path)
    server = site.start_server()
    try:
        user = site.user()
        zrc = client_of(site, user)
        zrc.create_model()
        parts = zrc.prepare(archive(site, "crash.zip", 200_000))
        sid = zrc.create_submission("test-challenge")["submission_id"]
        zrc.upload(limit=2)  # acknowledged before the crash
        inflight = parts[2]
        data = (Path(zrc.state.parts_dir) / inflight.filename).read_bytes()
        body, content_type = multipart_body(files={"file": (inflight.filename, data)})
        release = threading.Event()
        outcome: list[object] = []

        def slow_body() -> Iterator[bytes]:
            yield body[: len(body) // 2]
            release.wait(30)
            yield body[len(body) // 2 :]

        def post() -> None:
            try:
                outcome.append(
                    httpx.post(
                        f"{server.url}/submissions/{sid}/content/add",
                        params={"part_name": inflight.filename},
                        content=slow_body(),
                        headers={**zrc.headers, "content-type": content_type},
                        timeout=30,
                    )
                )
            except httpx.HTTPError as exc:
                outcome.append(exc)

        sender = threading.Thread(target=post)
        sender.start()
        # The server opened its temp file: the part is streaming right now.
        wait_for(lambda: any(f.startswith(f"upload-{sid}") for f in site.tmp_files()))
        kill_9(server)
        release.set()
        sender.join(30)
        assert isinstance(outcome[0], httpx.HTTPError)  # never acknowledged

        restarted = site.start_server()
        resumed = open_driver(restarted.url, zrc.workdir, token=site.token(user), part_size=PART)
        assert resumed.status() == "uploading"
        assert [p.filename for p in resumed.pending()] == [p.filename for p in parts[2:]]
        assert resumed.resume() == {"completed": True, "remaining": []}
        assert_uploaded(site, resumed)
    finally:
        server.stop()
        site.close()


def test_restart_finishes_a_join_that_never_happened(tmp_path: Path) -> None:
    """All parts were acknowledged but the server died before joining: start-up joins."""
    site = start_site(tmp_path)
    db, settings = site.db, site.settings
    try:
        user = site.user()
        raw = os.urandom(120_000)
        chunks = [raw[:PART], raw[PART : 2 * PART], raw[2 * PART :]]
        index = [
            {"filename": f"j_{n}.zip", "filesize": len(c), "filehash": hashlib.md5(c).hexdigest()}
            for n, c in enumerate(chunks)
        ]
        data = submission_body(make_model(db, user), index=index, hash=hashlib.md5(raw).hexdigest())
        sid = create_submission(db, settings, user, data).id
        for entry, chunk in zip(index, chunks, strict=True):
            store_part(db, settings, sid, entry["filename"], chunk)  # acknowledged, not joined
        # A half-written join of the dead process is left in tmp.
        (storage.tmp_dir(settings) / f"join-{sid}-dead.tmp").write_bytes(raw[:1000])

        server = site.start_server()
        try:
            zrc = open_driver(server.url, tmp_path / "client")
            zrc.state.submission_id = sid
            assert zrc.wait_status("uploaded", "invalid") == "uploaded"
            assert storage.archive_path(settings, sid).read_bytes() == raw
        finally:
            server.stop()
        uploaded = [e for e in site.events(sid) if e.status == "uploaded"]
        assert len(uploaded) == 1  # two workers recovered, one joined
    finally:
        site.close()


# --- resources a client holds: stalled bodies, killed workers, a full disk ---------------------
IDLE_SECONDS = 1


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A server with a short upload idle timeout and a recovery pass every second."""
    built = start_site(
        tmp_path_factory.mktemp("impatient"),
        {"ZR_UPLOAD_IDLE_TIMEOUT_SECONDS": str(IDLE_SECONDS), "ZR_UPLOAD_RECOVERY_SECONDS": "1"},
    )
    try:
        built.start_server()
        yield built
    finally:
        built.close()


def _started(site: Site, name: str) -> tuple[ZrcDriver, str, bytes, str]:
    """A submission with its first part acknowledged; returns the driver, its id, and the
    multipart body and Content-Type of its second part."""
    zrc = client_of(site)
    zrc.create_model()
    parts = zrc.prepare(archive(site, name))
    sid = zrc.create_submission("test-challenge")["submission_id"]
    zrc.upload(limit=1)
    data = (Path(zrc.state.parts_dir) / parts[1].filename).read_bytes()
    body, content_type = multipart_body(files={"file": (parts[1].filename, data)})
    return zrc, sid, body, content_type


def test_a_stalled_upload_gets_408_and_leaves_nothing(impatient: Site) -> None:
    zrc, sid, body, content_type = _started(impatient, "stall.zip")
    name = zrc.pending()[0].filename
    host, port = impatient.server.url.removeprefix("http://").split(":")
    head = (
        f"POST /submissions/{sid}/content/add?part_name={name} HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {zrc.state.token}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body[: len(body) // 2])  # then nothing, without hanging up
        answer = b""
        while chunk := sock.recv(65536):  # the server answers, then closes
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout"
    detail = rest.partition(b"\r\n\r\n")[2].decode()
    assert detail == f'{{"detail":"{uploads.IDLE.format(seconds=float(IDLE_SECONDS))}"}}'
    assert not any(f.startswith(f"upload-{sid}") for f in impatient.tmp_files())
    zrc.upload()
    assert_uploaded(impatient, zrc)


def _holder(path: Path) -> int:
    """The pid of the process that has `path` open."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) == str(path) for fd in (proc / "fd").iterdir()):
                    return int(proc.name)
    raise AssertionError(f"nobody has {path} open")


def test_a_worker_killed_mid_upload_leaves_no_temp_file(impatient: Site) -> None:
    """Swept while the server runs (the replacement worker's start-up is too early for it)."""
    zrc, sid, body, content_type = _started(impatient, "killed.zip")
    release = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield body[: len(body) // 2]
        release.wait(30)
        yield body[len(body) // 2 :]

    def post() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                f"{impatient.server.url}/submissions/{sid}/content/add",
                params={"part_name": zrc.pending()[0].filename},
                content=slow_body(),
                headers={**zrc.headers, "content-type": content_type},
                timeout=30,
            )

    sender = threading.Thread(target=post)
    sender.start()
    try:
        temp = wait_for(
            lambda: list(storage.tmp_dir(impatient.settings).glob(f"upload-{sid}-*")),
            what="the part to stream",
        )[0]
        os.kill(_holder(temp), signal.SIGKILL)
        wait_for(lambda: not temp.exists(), timeout=30, what="the sweep")
    finally:
        release.set()
        sender.join(30)
    zrc.upload()
    assert_uploaded(impatient, zrc)


def test_a_full_disk_gets_507_and_the_upload_completes_later(tmp_path: Path) -> None:
    """The data folder (SQLite included) on a small file system of its own."""
    with small_filesystem(tmp_path / "data", size="16m") as disk:
        site = start_site(tmp_path, {"ZR_UPLOAD_RESERVE_BYTES": "0"})
        db, server = site.db, site.start_server()
        try:
            zrc, sid, _body, _type = _started(site, "full.zip")
            single = client_of(site)
            single.create_model()
            single.prepare(archive(site, "single.zip"), multipart=False)
            single_id = single.create_submission("test-challenge")["submission_id"]
            fill(disk, leave=PART // 2)

            with pytest.raises(ZrcError) as refused:  # announced size: before the body
                zrc.upload()
            assert refused.value.status_code == 507
            assert refused.value.detail == storage.NO_ROOM.format(needed=PART)
            archive_file = Path(single.state.archive)
            with httpx.Client(base_url=server.url, timeout=30) as http:
                # Chunked, no size: the disk fills up while it streams.
                streamed = send_unsized(http, single_id, archive_file, single.headers, chunk=16384)
            assert streamed.status_code == 507
            assert streamed.json() == {"detail": NO_SPACE_DETAIL}
            assert site.tmp_files() == []

            empty_wal(db)
            fill(disk)
            created = httpx.post(
                f"{server.url}/users/{zrc.state.username}/models/create",
                params={"author_name": "x"},
                json=model_info(),
                headers=zrc.headers,
            )
            assert created.status_code == 507
            assert created.json() == {"detail": NO_SPACE_DETAIL}

            free_up(disk)
            zrc.resume()
            single.resume()
            assert_uploaded(site, zrc)
            assert_uploaded(site, single)
            assert_intact(db)
            assert "Traceback" not in server.process.output()
        finally:
            site.close()
