"""The official client's own classes against a real `serve`, from a separate virtual environment.

`zrc submit` is switched off in the published release, so a small script drives the client's
library the way its uploader does: `CurrentUser.login` (login + profile), `new_model_id`,
`split_archive` + `MultipartUploadHandler` (its split library and resume file),
`make_new_submission` (`test-` benchmarks go to `test-challenge`), `get_submission_status` and
`upload_submission` per part, then a second process resumes from the handler's resume file.

The client (and its pandas/scipy/pydantic-1 dependencies) is installed once into a cached venv
under ~/.cache (or $XDG_CACHE_HOME); when PyPI cannot be reached the test skips, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.factories import DEFAULT_PASSWORD, make_archive, make_user
from tests.helpers.processes import wait_for
from tests.helpers.server import Server
from tests.helpers.zrc import md5_file
from zerospeech_api.db.engine import Database
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage

pytestmark = pytest.mark.e2e

CLIENT = "zerospeech-benchmarks==0.9.4"
PART_SIZE = 60_000

DRIVER = textwrap.dedent(
    """
    import json, sys, warnings
    from pathlib import Path
    warnings.simplefilter("ignore")
    from zerospeech.upload.file_split import (
        MultipartUploadHandler, SinglePartUpload, md5sum, split_archive)
    from zerospeech.upload.submission import get_submission_status, upload_submission
    from zerospeech.upload.user_api import CurrentUser

    args = json.loads(sys.argv[1])
    archive = Path(args["archive"])
    user = CurrentUser.login((args["login"], args["password"]), auto_save=False)
    out = {"username": user.username, "last_name": user.last_name}
    if args["mode"] == "submit":
        model_id = user.new_model_id(
            author_name=user.last_name, description="CPC small", gpu_budget="60",
            train_set="LibriSpeech", authors="Ada Lovelace", institution="Engines Ltd",
            team="Engines", paper_url="https://example.org/p", code_url=None,
            author_label="Lovelace et al.")
        if args["multipart"]:
            manifest, parts_dir = split_archive(archive, chunk_max_size=args["part_size"])
            handler = MultipartUploadHandler(
                file=archive, filehash=md5sum(archive), index=manifest, parts_dir=parts_dir)
            handler.save()
        else:
            handler = SinglePartUpload(file=archive, filehash=md5sum(archive))
        submission_id = user.make_new_submission(
            model_id=model_id, filename=archive.name, filehash=handler.filehash,
            has_scores=True, leaderboard="scores/leaderboard.json",
            author_label="Lovelace et al.", benchmark_id="test-sLM21", is_test=True,
            index=handler.api_index)
        out.update(model_id=model_id, submission_id=submission_id)
    else:
        handler = MultipartUploadHandler.create_or_load(archive)
        submission_id = args["submission_id"]
    status = get_submission_status(submission_id, user.token)["status"]
    out["status_before"] = status
    sent = []
    for item in handler:
        if args.get("stop_after") is not None and len(sent) >= args["stop_after"]:
            break
        answer = upload_submission(item, submission_id=submission_id, token=user.token)
        handler.mark_completed(item)
        sent.append({"part": item.filepath.name, "answer": answer})
    out["sent"] = sent
    print(json.dumps(out))
    """
)


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "zerospeech-api-tests"


@pytest.fixture(scope="session")
def zrc_python() -> Path:
    """Python of a venv with the official client installed (built once, then reused)."""
    venv = _cache_root() / ("zrc-venv-" + CLIENT.split("==")[1])
    python = venv / "bin" / "python"
    if (venv / ".ready").is_file():
        return python
    building = venv.with_name(f"{venv.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
    install = subprocess.run(
        [str(building / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", CLIENT],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if install.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        pytest.skip(f"cannot install {CLIENT} from PyPI: {install.stderr.strip()[-500:]}")
    # Only bin/python is used (never the generated scripts), so the folder may be renamed.
    shutil.rmtree(venv, ignore_errors=True)
    building.rename(venv)
    (venv / ".ready").write_text(CLIENT)
    return python


def _client_home(root: Path) -> Path:
    """A HOME for the client: its app folder with a week-old repository index, so importing
    the package does not try to download one (this machine has no internet)."""
    home = root / "client-home"
    index = home / "zr-data" / "repo.json"
    index.parent.mkdir(parents=True)
    index.write_text(
        json.dumps({"last_modified": "2020-01-01T00:00:00", "datasets": [], "checkpoints": [],
                    "samples": []})
    )  # fmt: skip
    old = time.time() - 30 * 86400
    os.utime(index, (old, old))
    return home


def run_client(python: Path, home: Path, url: str, **args: object) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZR_", "_DEV"))}
    env.update(HOME=str(home), _DEV_API_URL=url)
    done = subprocess.run(
        [str(python), "-c", DRIVER, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _setup(
    make_server: Callable[..., Server], tmp_path: Path
) -> tuple[Server, Database, Settings, Path, dict[str, str]]:
    """A server, its database and settings, a HOME for the client and the user's credentials."""
    server = make_server(workers=2)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", secret_key="x" * 40)  # type: ignore[call-arg]
    db = Database(settings.database)
    user = make_user(db, settings, username="ada_l", email="ada@example.org")
    login = {"login": user.email, "password": DEFAULT_PASSWORD}
    return server, db, settings, _client_home(tmp_path), login


def test_official_client_multipart_upload_and_resume(
    zrc_python: Path, make_server: Callable[..., Server], tmp_path: Path
) -> None:
    server, db, settings, home, login = _setup(make_server, tmp_path)
    archive = make_archive(tmp_path / "my_submission.zip", payload_bytes=200_000)
    try:
        first = run_client(
            zrc_python, home, server.url, mode="submit", archive=str(archive), multipart=True,
            part_size=PART_SIZE, stop_after=2, **login,
        )  # fmt: skip
        assert first["username"] == "ada_l" and first["status_before"] == "uploading"
        assert [s["answer"]["completed"] for s in first["sent"]] == [False, False]
        submission_id = first["submission_id"]
        # A later process, a new login: the client resumes from its own resume file.
        second = run_client(
            zrc_python, home, server.url, mode="resume", archive=str(archive),
            submission_id=submission_id, **login,
        )  # fmt: skip
        assert second["status_before"] == "uploading"
        assert second["sent"][-1]["answer"] == {"completed": True, "remaining": []}
        assert len(first["sent"]) + len(second["sent"]) == 4
        final = storage.archive_path(settings, submission_id)
        wait_for(final.exists, timeout=30, what="the joined archive")
        assert md5_file(final) == md5_file(archive)
    finally:
        db.dispose()


def test_official_client_single_part_upload(
    zrc_python: Path, make_server: Callable[..., Server], tmp_path: Path
) -> None:
    server, db, settings, home, login = _setup(make_server, tmp_path)
    archive = make_archive(tmp_path / "single.zip", payload_bytes=80_000)
    try:
        result = run_client(
            zrc_python, home, server.url, mode="submit", archive=str(archive), multipart=False,
            part_size=PART_SIZE, **login,
        )  # fmt: skip
        assert result["sent"][0]["answer"] == {"completed": True, "remaining": []}
        final = storage.archive_path(settings, result["submission_id"])
        wait_for(final.exists, timeout=30, what="the joined archive")
        assert md5_file(final) == md5_file(archive)
    finally:
        db.dispose()
