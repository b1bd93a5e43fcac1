"""Builders for evaluation tests: benchmarks, evaluators, models, uploaded submissions with
their archive.zip written where the upload path would put it, leaderboards, realistic entries."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import random
import secrets
import shutil
import stat
import struct
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.helpers.builders import make_benchmark  # noqa: F401 - re-exported for tests
from tests.helpers.outbox import read_mails
from tests.helpers.processes import wait_for  # noqa: F401 - re-exported for tests
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import (
    Evaluator,
    EvaluatorKind,
    Job,
    JobState,
    Leaderboard,
    Model,
    Submission,
    SubmissionEvent,
    SubmissionPart,
    SubmissionStatus,
    User,
    WorkerHeartbeat,
    utcnow,
)
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage

ENTRY_PATH = "scores/leaderboard.json"
SORT_KEY = "scores.lexical.all.test"


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


def make_evaluator(db: Database, name: str, command: str, timeout: int | None = None) -> int:
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


def make_model(db: Database, user: User, *, author_label: str | None = "Lovelace et al.") -> str:
    model_id = f"model-{secrets.token_hex(4)}"
    with db.transaction() as session:
        session.add(
            Model(
                id=model_id,
                user_id=user.id,
                description="a test model",
                authors="Ada Lovelace",
                institution="Analytical Engines Ltd",
                author_label=author_label,
            )
        )
    return model_id


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


HOUR = dt.timedelta(hours=1)


def add_job(db: Database, submission_id: str, **values: object) -> int:
    """A job row for the submission (queued unless `state` says otherwise)."""
    with db.transaction() as session:
        job = Job(submission_id=submission_id, state=JobState.QUEUED, max_attempts=3)
        for name, value in values.items():
            setattr(job, name, value)
        session.add(job)
        session.flush()
        return job.id


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


def age(db: Database, submission_id: str, by: dt.timedelta) -> None:
    """Make the submission's last change `by` ago."""
    with db.transaction() as session:
        session.execute(
            update(Submission)
            .where(Submission.id == submission_id)
            .values(updated_at=utcnow() - by)
        )


def status_of(db: Database, submission_id: str) -> str | None:
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


def outbox_messages(settings_or_dir: Settings | Path) -> list[dict[str, str]]:
    """Mails written to <data>/outbox (read by outbox.read_mails): to, subject, decoded body,
    in file-name order."""
    folder = (
        settings_or_dir / "outbox"
        if isinstance(settings_or_dir, Path)
        else settings_or_dir.data_dir / "outbox"
    )
    return [
        {"to": mail.to, "subject": mail.subject, "body": mail.body}
        for mail in sorted(read_mails(folder), key=lambda mail: mail.path.name)
    ]


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


def process_alive(pid: int) -> bool:
    """True if `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat_line = handle.read()
    except OSError:
        return False
    return stat_line[stat_line.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


_MOUNT_AND_RUN = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'


def run_on_small_disk(
    mount: Path, argv: list[str], *, size: str = "1m"
) -> subprocess.CompletedProcess[str]:
    """Run `argv` in a private mount namespace where `mount` is a tmpfs of `size`: a real disk
    that fills up (ENOSPC from the kernel). Skips where the kernel does not allow it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    # As root a mount namespace is enough; otherwise a user namespace must allow it.
    for flags in (["-m"], ["-r", "-m"]) if os.geteuid() == 0 else (["-r", "-m"],):
        command = [unshare, *flags, "sh", "-c", _MOUNT_AND_RUN, "sh", size, str(mount)]
        if subprocess.run([*command, "true"], capture_output=True).returncode == 0:
            return subprocess.run([*command, *argv], capture_output=True, text=True, check=True)
    pytest.skip("this kernel does not let the tests mount a small tmpfs (unshare -m)")
