"""Test factories: every row, archive and request body the tests and benches build, one
function per thing, written straight to the database (no HTTP) or through the service that
owns the row; plus the readers of what they built (status, events)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import json
import os
import random
import re
import secrets
import stat
import struct
import zipfile
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update

from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import (
    Evaluator,
    EvaluatorKind,
    Job,
    JobState,
    Leaderboard,
    LeaderboardEntry,
    Submission,
    SubmissionEvent,
    SubmissionPart,
    SubmissionStatus,
    User,
    WorkerHeartbeat,
    utcnow,
)
from zerospeech_api.security.passwords import hash_password, hasher
from zerospeech_api.security.sessions import open_session
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage

DEFAULT_PASSWORD = "correct horse battery staple"
ENTRY_PATH = "scores/leaderboard.json"
SORT_KEY = "scores.lexical.all.test"
HOUR = dt.timedelta(hours=1)
# The archive hash `submission_body` declares (sent upper case, as some clients do).
ARCHIVE_MD5 = "0123456789abcdef0123456789abcdef"
# What the model service's readable ids look like (`brave-otter-3f9a`).
MODEL_ID_SHAPE = re.compile(r"[a-z]+-[a-z]+-[0-9a-f]{4}")
_counter = itertools.count(1)


# --- accounts --------------------------------------------------------------------------------
def make_user(
    db: Database,
    settings: Settings,
    *,
    username: str | None = None,
    password: str = DEFAULT_PASSWORD,
    verified: bool = True,
    active: bool = True,
    admin: bool = False,
    email: str | None = None,
) -> User:
    """Insert a user with an argon2id hash of `password`."""
    n = next(_counter)
    username = username or f"user{n}"
    ph = hasher(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    with db.transaction() as session:
        user = User(
            username=username,
            email=email or f"{username}@example.org",
            first_name="Ada",
            last_name="Lovelace",
            affiliation="Analytical Engines Ltd",
            password_hash=hash_password(ph, password),
            verified=verified,
            active=active,
            admin=admin,
        )
        session.add(user)
        session.flush()
        session.expunge(user)
    return user


def bearer(db: Database, settings: Settings, user: User) -> dict[str, str]:
    """An Authorization header for a fresh session of `user`."""
    with db.transaction() as session:
        token, _ = open_session(session=session, settings=settings, user=session.merge(user))
    return {"Authorization": f"Bearer {token}"}


# --- benchmarks, evaluators, leaderboards ------------------------------------------------------
def make_benchmark(db: Database, benchmark_id: str | None = None, **options: Any) -> str:
    """Create an open benchmark through the service (options as in `create_benchmark`; by
    default it starts today and is evaluated by the built-in `scores` evaluator)."""
    from zerospeech_api.benchmarks.service import create_benchmark

    benchmark_id = benchmark_id or f"bench-{secrets.token_hex(3)}"
    with db.transaction() as session:
        create_benchmark(
            session=session,
            benchmark_id=benchmark_id,
            label=options.pop("label", f"Benchmark {benchmark_id}"),
            url=options.pop("url", "https://example.org"),
            **options,
        )
    return benchmark_id


def make_evaluator(db: Database, name: str, command: str, timeout: int | None = None) -> int:
    """A command evaluator row; returns its id."""
    with db.transaction() as session:
        evaluator = Evaluator(
            name=name, kind=EvaluatorKind.COMMAND, command=command, timeout_seconds=timeout
        )
        session.add(evaluator)
        session.flush()
        return evaluator.id


def make_leaderboard(
    db: Database,
    label: str,
    benchmark_id: str,
    *,
    entry_path: str = ENTRY_PATH,
    sort_key: str = SORT_KEY,
    descending: bool = True,
) -> None:
    """A leaderboard of `benchmark_id` ranking by `sort_key`."""
    with db.transaction() as session:
        session.add(
            Leaderboard(
                label=label,
                benchmark_id=benchmark_id,
                entry_path=entry_path,
                sort_key=sort_key,
                descending=descending,
            )
        )


def store_entries(db: Database, label: str, entries: list[dict[str, Any]]) -> None:
    """Insert entries as they are (no check), as imported ones (no submission)."""
    from zerospeech_api.leaderboards import service

    with db.transaction() as session:
        leaderboard = service.get_leaderboard(session=session, label=label, public=False)
        for data in entries:
            session.add(LeaderboardEntry(leaderboard_id=leaderboard.id, data=data))


def nested(levels: int) -> Any:
    """Lists `levels` deep."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def stored_bad_entries(db: Database) -> list[dict[str, Any]]:
    """Entries breaking the entry rules that this backend can hold (PostgreSQL's json type
    refuses NaN and Infinity; SQLite keeps them)."""
    bad: list[dict[str, Any]] = [
        {"submission_id": "huge", "scores": {"a": {"b": 9**400}}},
        {"submission_id": "deep", "scores": {"a": {"b": 1.0}}, "details": nested(60)},
        {"submission_id": "cr", "scores": {"a": {"b": None}}, "description": "\r=1+2"},
        {"submission_id": "surrogate", "scores": {"a": {"b": "x"}}, "description": "a\ud800b"},
        {"submission_id": "nul", "scores": {"a": {"b": [1]}}, "description": "\x00@SUM(A1)"},
    ]
    if db.url.startswith("sqlite"):
        bad += [
            {"submission_id": "nan", "scores": {"a": {"b": float("nan")}}},
            {"submission_id": "inf", "scores": {"a": {"b": float("-inf")}}, "x": [float("inf")]},
        ]
    return bad


def realistic_entry(n: int = 0, *, score: float | None = None, **overrides: Any) -> dict[str, Any]:
    """An sLM21-like entry (values vary with `n`), as the zrc client puts in scores/."""
    rng = random.Random(n)
    lexical = round(score if score is not None else rng.uniform(50, 95), 4)
    entry: dict[str, Any] = {
        "model_id": f"untrusted-model-{n}",
        "submission_id": f"untrusted-submission-{n}",
        "index": None,
        "submission_date": "1999-01-01T00:00:00",
        "submitted_by": "someone-else",
        "description": f"CPC-big + k-means 50 + BERT-small, run {n}",
        "publication": {
            "author_short": "Forged et al.",
            "authors": "Ada Lovelace, Charles Babbage",
            "paper_title": f"Spoken language modelling from raw audio ({n})",
            "paper_url": "https://arxiv.org/abs/2011.11588",
            "institution": "Analytical Engines Ltd",
            "team_name": None,
            "code": "https://github.com/example/baseline",
            "DOI": None,
            "open_science": True,
        },
        "details": {
            "train_set": "LibriSpeech 960h",
            "benchmarks": ["sLM21"],
            "gpu_budget": "60",
            "parameters": {"phonetic": {"metric": "cosine"}, "semantic": {"pooling": "max"}},
        },
        "scores": {
            "lexical": {
                "all": {"dev": round(lexical + 0.5, 4), "test": lexical},
                "in_vocab": {"dev": round(lexical + 2, 4), "test": round(lexical + 1.5, 4)},
            },
            "syntactic": {
                "dev": round(rng.uniform(50, 70), 4),
                "test": round(rng.uniform(50, 70), 4),
            },
            "semantic": {
                "normal": {
                    "synthetic": round(rng.uniform(0, 10), 4),
                    "librispeech": round(rng.uniform(0, 10), 4),
                },
                "weighted": {
                    "synthetic": round(rng.uniform(0, 10), 4),
                    "librispeech": round(rng.uniform(0, 10), 4),
                },
            },
        },
        "extras": {"epochs": 200 + n, "notes": "baseline"},
    }
    entry.update(overrides)
    return entry


# --- models ------------------------------------------------------------------------------------
def model_info(**overrides: Any) -> dict[str, Any]:
    """A `models/create` body as the client sends it (naive `created_at`, extra keys ignored)."""
    info: dict[str, Any] = {
        "description": "CPC + k-means + LSTM",
        "gpu_budget": "60",
        "train_set": "LibriSpeech 960h",
        "authors": "Ada Lovelace, Charles Babbage",
        "institution": "Analytical Engines Ltd",
        "team": "Engines",
        "author_label": "Lovelace et al.",
        "paper_url": "https://example.org/paper",
        "code_url": None,
        "created_at": dt.datetime.now().isoformat(),
    }
    info.update(overrides)
    return info


def make_model(db: Database, user: User, **info: Any) -> str:
    """Create a model of `user` through the service (fields of `model_info`, overridden by
    `info`). Its id is `model-<hex>`, so tests tell it from the untrusted ids in entries."""
    from zerospeech_api.models.schemas import ModelCreate
    from zerospeech_api.models.service import create_model

    with db.transaction() as session:
        owner = session.merge(user)
        return create_model(
            session=session,
            owner=owner,
            data=ModelCreate(**model_info(**info)),
            new_id=lambda: f"model-{secrets.token_hex(4)}",
        ).id


def publish_model(db: Database, owner: User, model_id: str, bench: str, *, private: bool) -> str:
    """A completed submission of the model with an entry on a leaderboard of a new benchmark
    `bench` (private or not), written as rows."""
    make_benchmark(db, bench, private=private)
    submission_id = f"sub-{bench}"
    with db.transaction() as session:
        session.add(
            Submission(
                id=submission_id,
                user_id=owner.id,
                model_id=model_id,
                benchmark_id=bench,
                filename="a.zip",
                archive_hash="0" * 32,
                status="completed",
            )
        )
        board = Leaderboard(label=f"lb-{bench}", benchmark_id=bench, sort_key="scores.x")
        session.add(board)
        session.flush()
        session.add(LeaderboardEntry(leaderboard_id=board.id, submission_id=submission_id, data={}))
    return submission_id


# --- archives ----------------------------------------------------------------------------------
def zip_bytes(
    files: dict[str, bytes | str],
    *,
    symlinks: dict[str, str] | None = None,
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    """A zip with these members (names taken verbatim, so tests can write `../x`)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2021, 3, 22, 23, 0, 44))
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = compression
            zf.writestr(info, content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name, date_time=(2021, 3, 22, 23, 0, 44))
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buffer.getvalue()


def submission_files(entry: dict[str, Any] | None = None, *, path: str = ENTRY_PATH) -> dict:
    """The members of a typical zrc submission archive."""
    files: dict[str, bytes | str] = {
        "meta.yaml": "model_info:\n  model_id: null\n  system_description: test\n",
        "params.yaml": "quiet: true\n",
        "lexical/dev.txt": "aaa 0.1\nbbb 0.2\n",
    }
    if entry is not None:
        files[path] = json.dumps(entry)
    return files


def make_archive(
    path: Path, *, payload_bytes: int = 50_000, seed: int = 0, repeat_block: int = 0
) -> Path:
    """A submission zip like the client's (meta.yaml, params.yaml, scores/leaderboard.json, a
    stored data file of `payload_bytes`). With `repeat_block`, the data file repeats one random
    block, so equal-sized parts of it can have identical bytes (duplicate hashes)."""
    rng = random.Random(seed)
    if repeat_block:
        block = rng.randbytes(repeat_block)
        payload = (block * (payload_bytes // repeat_block + 1))[:payload_bytes]
    else:
        payload = rng.randbytes(payload_bytes)
    entry = {
        "model_id": "untrusted",
        "submission_id": "untrusted",
        "submission_date": "1999-01-01T00:00:00",
        "submitted_by": "someone",
        "description": "test submission",
        "publication": {"author_short": "Lovelace et al.", "authors": "Ada Lovelace"},
        "details": {"train_set": "none", "benchmarks": ["test"], "gpu_budget": "1"},
        "scores": {"lexical": {"all": {"dev": 1.0, "test": rng.random()}}},
        "extras": {},
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("meta.yaml", "model_info:\n  model_id: null\n")
        archive.writestr("params.yaml", f"seed: {seed}\n")
        archive.writestr("scores/leaderboard.json", json.dumps(entry))
        # Stored uncompressed, so the zip is a little larger than the payload.
        info = zipfile.ZipInfo("data/features.bin", date_time=(2020, 1, 1, 0, 0, 0))
        archive.writestr(info, payload)
    return path


def many_entries_zip(path: Path, entries: int, *, name_length: int = 40) -> int:
    """Write a stored zip of `entries` empty files with long names (a hostile central
    directory: ~150 bytes an entry), fast, without zipfile. Returns the file size."""
    local = struct.Struct("<4s5H3L2H")
    central = struct.Struct("<4s6H3L5H2L")
    directory = bytearray()
    with open(path, "wb") as out:
        offset = 0
        for n in range(entries):
            name = f"{n:0{name_length}d}".encode()
            header = local.pack(b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
            out.write(header)
            directory += central.pack(
                b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, offset
            )
            directory += name
            offset += len(header)
        out.write(directory)
        count = min(entries, 0xFFFF)
        out.write(
            struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), offset, 0)
        )
    return path.stat().st_size


def multipart_body(fields: dict | None = None, files: dict | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type, encoded as httpx (the tests' client)."""
    request = httpx.Request("POST", "http://x/", data=fields, files=files)
    return request.read(), request.headers["content-type"]


# --- submissions -------------------------------------------------------------------------------
def submission_body(
    model: str, benchmark: str = "test-challenge", **overrides: Any
) -> dict[str, Any]:
    """A `submissions/create` body of two parts, as the client sends it."""
    values: dict[str, Any] = {
        "model_id": model,
        "benchmark_id": benchmark,
        "filename": "sub.zip",
        "hash": ARCHIVE_MD5.upper(),
        "has_scores": True,
        "multipart": True,
        "author_label": "Lovelace et al.",
        "index": [
            {"filename": "sub_0001.zip", "filesize": 100, "filehash": "a" * 32},
            {"filename": "sub_0002.zip", "filesize": 50, "filehash": "b" * 32},
        ],
        "leaderboard": "scores/leaderboard.json",
    }
    values.update(overrides)
    return values


def create_submission(
    db: Database, settings: Settings, user: User, data: dict[str, Any]
) -> Submission:
    """Register a submission (`data` as `submission_body`) through the service."""
    from zerospeech_api.submissions import service
    from zerospeech_api.submissions.schemas import SubmissionCreate

    with db.transaction() as session:
        return service.create_submission(
            session=session,
            settings=settings,
            owner=session.merge(user),
            data=SubmissionCreate(**data),
        )


def three_parts(db: Database, settings: Settings) -> tuple[str, list[bytes]]:
    """A submission (of a new user) whose parts 1 and 3 have the same bytes; its id and parts."""
    a, b = os.urandom(1000), os.urandom(700)
    index = [
        {"filename": name, "filesize": len(data), "filehash": hashlib.md5(data).hexdigest()}
        for name, data in (("s_1.zip", a), ("s_2.zip", b), ("s_3.zip", a))
    ]
    user = make_user(db, settings)
    archive_md5 = hashlib.md5(a + b + a).hexdigest()
    data = submission_body(make_model(db, user), index=index, hash=archive_md5)
    return create_submission(db, settings, user, data).id, [a, b, a]


def received_file(settings: Settings, data: bytes) -> Any:
    """`data` received into the data folder's temp area, as the upload route leaves it."""
    from zerospeech_api.submissions import uploads

    received = uploads.ReceivedFile(storage.tmp_dir(settings), "test")
    received.write([memoryview(data)])
    received.finish()
    return received


def upload_target(db: Database, settings: Settings, submission_id: str, name: str) -> Any:
    """Where the owner's upload of part `name` goes (`uploads.plan_upload`)."""
    from zerospeech_api.submissions import uploads

    with db.session(read_only=True) as session:
        submission = session.get(Submission, submission_id)
        assert submission is not None
        return uploads.plan_upload(
            session=session,
            settings=settings,
            submission_id=submission_id,
            user=submission.user,
            part_name=name,
        )


def store_part(db: Database, settings: Settings, submission_id: str, name: str, data: bytes) -> Any:
    """Receive, verify and store part `name` as the upload route does; its progress."""
    from zerospeech_api.submissions import uploads

    target = upload_target(db, settings, submission_id, name)
    received = received_file(settings, data)
    try:
        uploads.verify(target, received)
        return uploads.store_part(db=db, settings=settings, target=target, received=received)
    finally:
        received.discard()


def make_submission(
    db: Database,
    settings: Settings,
    user: User,
    *,
    benchmark_id: str,
    archive: bytes | None = None,
    has_scores: bool = True,
    leaderboard_path: str = ENTRY_PATH,
    status: SubmissionStatus = SubmissionStatus.UPLOADED,
    model_id: str | None = None,
    author_label: str | None = None,
) -> str:
    """A submission row in `status` with its archive at storage.archive_path."""
    model_id = model_id or make_model(db, user)
    submission_id = f"sub{secrets.token_hex(6)}"
    if archive is None:
        archive = zip_bytes(submission_files(realistic_entry()))
    path = storage.archive_path(settings, submission_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(archive)
    with db.transaction() as session:
        session.add(
            Submission(
                id=submission_id,
                user_id=user.id,
                model_id=model_id,
                benchmark_id=benchmark_id,
                filename="sub.zip",
                archive_hash="0" * 32,
                archive_size=len(archive),
                has_scores=has_scores,
                leaderboard_path=leaderboard_path,
                author_label=author_label,
                status=status,
            )
        )
    return submission_id


def make_received_upload(
    db: Database,
    settings: Settings,
    user: User,
    *,
    benchmark_id: str,
    parts: list[bytes],
    received_at: dt.datetime,
) -> str:
    """An `uploading` submission whose parts were all received (files in place) at
    `received_at` but never joined, as a server that died before its join leaves it."""
    submission_id = f"sub{secrets.token_hex(6)}"
    for position, data in enumerate(parts):
        path = storage.part_path(settings, submission_id, position)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    with db.transaction() as session:
        session.add(
            Submission(
                id=submission_id,
                user_id=user.id,
                model_id=make_model(db, user),
                benchmark_id=benchmark_id,
                filename="sub.zip",
                archive_hash=hashlib.md5(b"".join(parts)).hexdigest(),
                multipart=len(parts) > 1,
                has_scores=True,
                leaderboard_path=ENTRY_PATH,
                status=SubmissionStatus.UPLOADING,
                parts=[
                    SubmissionPart(
                        position=position,
                        filename=f"sub_{position + 1}.zip",
                        size=len(data),
                        md5=hashlib.md5(data).hexdigest(),
                        received_at=received_at,
                    )
                    for position, data in enumerate(parts)
                ],
            )
        )
    return submission_id


def age(db: Database, submission_id: str, by: dt.timedelta) -> None:
    """Make the submission's last change `by` ago."""
    with db.transaction() as session:
        session.execute(
            update(Submission)
            .where(Submission.id == submission_id)
            .values(updated_at=utcnow() - by)
        )


# --- the queue ---------------------------------------------------------------------------------
def add_job(db: Database, submission_id: str, **values: object) -> int:
    """A job row for the submission (queued unless `state` says otherwise)."""
    with db.transaction() as session:
        job = Job(submission_id=submission_id, state=JobState.QUEUED, max_attempts=3)
        for name, value in values.items():
            setattr(job, name, value)
        session.add(job)
        session.flush()
        return job.id


def add_running_job(
    db: Database,
    submission_id: str,
    *,
    owner: str,
    lease_left: dt.timedelta,
    running_for: dt.timedelta,
    attempts: int = 1,
    now: dt.datetime | None = None,
) -> int:
    """A running job leased by worker `owner`, started `running_for` before `now` (by default
    the current time), whose lease ends `lease_left` after it (negative: expired)."""
    now = now or utcnow()
    return add_job(
        db,
        submission_id,
        state=JobState.RUNNING,
        lease_owner=owner,
        lease_expires_at=now + lease_left,
        started_at=now - running_for,
        attempts=attempts,
    )


def add_worker(
    db: Database,
    identity: str,
    *,
    seen: dt.datetime,
    node: str = "node-1",
    pid: int = 4242,
    job_id: int | None = None,
) -> None:
    """A worker heartbeat row last written at `seen`."""
    with db.transaction() as session:
        session.add(
            WorkerHeartbeat(
                id=identity,
                node=node,
                pid=pid,
                started_at=seen - HOUR,
                last_seen_at=seen,
                current_job_id=job_id,
            )
        )


# --- reading back ------------------------------------------------------------------------------
def status_of(db: Database, submission_id: str) -> str | None:
    """The submission's status now (None once it is gone)."""
    with db.session(read_only=True) as session:
        submission = session.get(Submission, submission_id)
        return submission.status if submission else None


def events_of(db: Database, submission_id: str) -> list[SubmissionEvent]:
    """The submission's events, oldest first (by id)."""
    with db.session(read_only=True) as session:
        return list(
            session.scalars(
                select(SubmissionEvent)
                .where(SubmissionEvent.submission_id == submission_id)
                .order_by(SubmissionEvent.id)
            )
        )
