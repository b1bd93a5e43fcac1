"""A zrc-style upload driver: the official client's call order and resume behaviour, over HTTP.

Call order (zrc-contract.md): benchmark info, login (`POST /auth/login`, or a bearer token given
to the driver), profile, model create, submission create, content/status, content/add per part.
The archive is split into plain byte slices of `part_size` bytes written next to it (as the
client does), part names come from `part_name(stem, n)`, parts go in any order, and progress is
saved in `<workdir>/upload.json` after each acknowledged part so a new driver can resume. Like
the client, parts are told apart by MD5: entries with identical bytes are uploaded once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.factories import model_info

CLIENT_PART_SIZE = 500_000_000  # what the real client uses; tests pass something small
CLIENT_ID = "zrc-commandline-benchmark-tool"


class ZrcError(Exception):
    """A non-200 answer, with the message the client would build from `detail` + `message`."""

    def __init__(self, call: str, response: httpx.Response) -> None:
        try:
            data = response.json()
        except ValueError:
            data = {}
        self.status_code = response.status_code
        self.detail = str(data.get("detail", "")) + str(data.get("message", ""))
        self.json = data
        super().__init__(f"{call}: returned {response.status_code} => {self.detail}")


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def underscore_name(stem: str, n: int) -> str:
    """`sub_0001.zip` (one version of the client's split library)."""
    return f"{stem}_{n:04d}.zip"


def plain_name(stem: str, n: int) -> str:
    """`sub_1.zip` (another version)."""
    return f"{stem}_{n}.zip"


@dataclass
class Part:
    filename: str
    filesize: int
    filehash: str


def split_archive(
    archive: Path, part_size: int, part_name: Callable[[str, int], str] = underscore_name
) -> tuple[Path, list[Part]]:
    """Cut the archive into byte slices in `.<stem>.parts/` beside it; returns (folder, index)."""
    folder = archive.parent / f".{archive.stem}.parts"
    folder.mkdir(exist_ok=True)
    parts = []
    with open(archive, "rb") as source:
        n = 1
        while True:
            data = source.read(part_size)
            if not data:
                break
            name = part_name(archive.stem, n)
            (folder / name).write_bytes(data)
            parts.append(Part(name, len(data), hashlib.md5(data).hexdigest()))
            n += 1
    return folder, parts


@dataclass
class UploadState:
    """What the client keeps on disk to resume (its `.manifest` + `*.upload.json`)."""

    username: str = ""
    token: str = ""
    model_id: str | None = None
    submission_id: str | None = None
    archive: str = ""
    archive_hash: str = ""
    multipart: bool = True
    parts_dir: str = ""
    index: list[dict[str, Any]] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)  # hashes acknowledged by the server


class ZrcDriver:
    """Drive one submission through the contract; every non-200 raises `ZrcError`."""

    def __init__(
        self,
        base_url: str,
        workdir: Path,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        part_size: int = CLIENT_PART_SIZE,
        part_name: Callable[[str, int], str] = underscore_name,
        timeout: float = 120,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.part_size = part_size
        self.part_name = part_name
        # `http` lets tests drive an in-process TestClient; by default a real HTTP client.
        self.http = http or httpx.Client(base_url=self.base_url, timeout=timeout)
        self.state = UploadState()
        if self.state_path.is_file():
            self.state = UploadState(**json.loads(self.state_path.read_text()))
        if username:
            self.state.username = username
        if token:
            self.state.token = token

    # --- plumbing ---------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.workdir / "upload.json"

    def save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.state), indent=2))
        os.replace(tmp, self.state_path)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ZrcDriver:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.state.token}"} if self.state.token else {}

    def _ok(self, call: str, response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise ZrcError(call, response)
        data = response.json()
        assert isinstance(data, dict), f"{call}: every 200 must carry a JSON object"
        return data

    # --- the contract, in the client's order --------------------------------------------------
    def benchmark_info(self, benchmark_id: str) -> dict[str, Any]:
        """Step 1: refuse like the client unless active and not past its end date."""
        info = self._ok("benchmark_info", self.http.get(f"/benchmarks/{benchmark_id}/info"))
        end = info["end_date"]
        if not info["active"] or (end is not None and dt.date.fromisoformat(end) < dt.date.today()):
            raise RuntimeError(f"benchmark {benchmark_id} is closed")
        return info

    def login(self) -> str:
        """Step 2: the password grant the client sends (form-encoded), unless we have a token."""
        if self.state.token and not self.password:
            return self.state.token
        data = {
            "grant_type": "password",
            "username": self.state.username,
            "password": self.password or "",
            "client_id": CLIENT_ID,
            "client_secret": "public",
        }
        token = self._ok("user_login", self.http.post("/auth/login", data=data))
        assert token["token_type"] == "bearer"
        self.state.username = token["username"]
        self.state.token = token["access_token"]
        self.save()
        return self.state.token

    def profile(self) -> dict[str, Any]:
        """Step 3."""
        return self._ok(
            "user_info",
            self.http.get(f"/users/{self.state.username}/profile", headers=self.headers),
        )

    def create_model(self, author_name: str = "Lovelace", **info: Any) -> str:
        """Step 4 (only when there is no model id yet)."""
        if self.state.model_id:
            return self.state.model_id
        response = self.http.post(
            f"/users/{self.state.username}/models/create",
            params={"author_name": author_name},
            json=model_info(**info),
            headers=self.headers,
        )
        self.state.model_id = self._ok("new_model", response)["model_id"]
        self.save()
        return self.state.model_id

    def prepare(self, archive: Path, *, multipart: bool = True) -> list[Part]:
        """Hash and (multipart) split the archive, as the client does before registering."""
        self.state.archive = str(archive)
        self.state.archive_hash = md5_file(archive)
        self.state.multipart = multipart
        if multipart:
            folder, parts = split_archive(archive, self.part_size, self.part_name)
            self.state.parts_dir = str(folder)
            self.state.index = [asdict(p) for p in parts]
        else:
            size = archive.stat().st_size
            self.state.parts_dir = str(archive.parent)
            self.state.index = [asdict(Part(archive.name, size, self.state.archive_hash))]
        self.save()
        return [Part(**p) for p in self.state.index]

    def submission_body(
        self, benchmark_id: str, *, leaderboard: str = "scores/leaderboard.json", **overrides: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model_id": self.state.model_id,
            "benchmark_id": benchmark_id,
            "filename": Path(self.state.archive).name,
            "hash": self.state.archive_hash,
            "has_scores": bool(leaderboard),
            "multipart": self.state.multipart,
            "author_label": "Lovelace et al.",
            "index": self.state.index if self.state.multipart else None,
            "leaderboard": leaderboard,
        }
        body.update(overrides)
        return body

    def create_submission(self, benchmark_id: str, **overrides: Any) -> dict[str, Any]:
        """Step 5 (only when there is no submission id yet)."""
        response = self.http.post(
            f"/users/{self.state.username}/submissions/create",
            json=self.submission_body(benchmark_id, **overrides),
            headers=self.headers,
        )
        created = self._ok("new_submission", response)
        self.state.submission_id = created["submission_id"]
        self.save()
        return created

    def status(self) -> str:
        """Step 6: no auth header, as the client."""
        response = self.http.get(f"/submissions/{self.state.submission_id}/content/status")
        return str(self._ok("submission_status", response)["status"])

    def send(self, name: str, content: bytes | Path, *, filename: str | None = None) -> dict:
        """Step 7 for one part (any bytes: tests send wrong ones on purpose)."""
        stream: Any = open(content, "rb") if isinstance(content, Path) else io.BytesIO(content)
        with stream:
            response = self.http.post(
                f"/submissions/{self.state.submission_id}/content/add",
                params={"part_name": name},
                files={"file": (filename or name, stream, "application/octet-stream")},
                headers=self.headers,
            )
        return self._ok("submission_content_add", response)

    def pending(self) -> list[Part]:
        """Parts not acknowledged yet, one per distinct MD5 (the client's set difference)."""
        seen = set(self.state.uploaded)
        todo = []
        for entry in self.state.index:
            if entry["filehash"] not in seen:
                seen.add(entry["filehash"])
                todo.append(Part(**entry))
        return todo

    def upload(
        self, *, order: Sequence[int] | None = None, limit: int | None = None
    ) -> dict[str, Any] | None:
        """Send pending parts (in `order`, indices into `pending()`), recording each
        acknowledgement; `limit` stops early (an interrupted upload). Returns the last answer."""
        todo = self.pending()
        chosen: Iterable[Part] = [todo[i] for i in order] if order is not None else todo
        answer = None
        for n, part in enumerate(chosen):
            if limit is not None and n >= limit:
                break
            answer = self.send(part.filename, Path(self.state.parts_dir) / part.filename)
            self.state.uploaded.append(part.filehash)
            self.save()
        return answer

    def submit(
        self,
        archive: Path,
        benchmark_id: str = "test-challenge",
        *,
        multipart: bool = True,
        order: Sequence[int] | None = None,
    ) -> str:
        """The whole sequence; returns the submission id."""
        self.benchmark_info(benchmark_id)
        self.login()
        if self.password:
            self.profile()
        self.create_model()
        self.prepare(archive, multipart=multipart)
        self.create_submission(benchmark_id)
        assert self.status() == "uploading"
        self.upload(order=order)
        assert self.state.submission_id
        return self.state.submission_id

    def resume(self) -> dict[str, Any] | None:
        """What the client does on `--resume`: status check, then the unacknowledged parts."""
        if self.status() != "uploading":
            raise RuntimeError("submission does not allow uploading")
        return self.upload()

    def wait_status(self, *wanted: str, timeout: float = 60) -> str:
        """Poll content/status until it is one of `wanted` (joining happens in the background)."""
        import time

        deadline = time.monotonic() + timeout
        status = self.status()
        while status not in wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"status still {status!r}, wanted {wanted}")
            time.sleep(0.05)
            status = self.status()
        return status
