"""A submission's leaderboard entries: stamped with the server's facts, kept in a results file.

Entries are keyed by where they came from: the entry path inside the archive (scores
evaluator) or `COMMAND_OUTPUT` (command evaluator: one entry for every leaderboard of the
benchmark). The evaluation worker writes the results file; publishing reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerospeech_api.db.tables import Submission
from zerospeech_api.files import write_atomically
from zerospeech_api.leaderboards.entries import MAX_ENTRY_BYTES, EntryError, parse_entry
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage

COMMAND_OUTPUT = ""  # key of the command evaluator's single entry
BAD_ENTRY_PATH = "leaderboard path must be a relative path inside the archive"


@dataclass(frozen=True)
class SubmissionFacts:
    """What the database says about a submission (trusted, unlike the archive)."""

    submission_id: str
    model_id: str
    benchmark_id: str
    username: str
    submission_date: str
    author_label: str | None
    has_scores: bool
    leaderboard_path: str


def submission_facts(submission: Submission) -> SubmissionFacts:
    """The trusted facts of a submission row (its user and model are loaded on access)."""
    return SubmissionFacts(
        submission_id=submission.id,
        model_id=submission.model_id,
        benchmark_id=submission.benchmark_id,
        username=submission.user.username,
        submission_date=submission.created_at.isoformat(),
        author_label=submission.author_label or submission.model.author_label,
        has_scores=submission.has_scores,
        leaderboard_path=submission.leaderboard_path or "",
    )


def stamp(entry: dict[str, Any], facts: SubmissionFacts) -> dict[str, Any]:
    """A copy of `entry` with ids, submitter, date and author label taken from the database."""
    stamped = {k: v for k, v in entry.items() if k != "index"}
    stamped["model_id"] = facts.model_id
    stamped["submission_id"] = facts.submission_id
    stamped["submitted_by"] = facts.username
    stamped["submission_date"] = facts.submission_date
    publication = stamped.get("publication")
    publication = dict(publication) if isinstance(publication, dict) else {}
    publication["author_short"] = facts.author_label
    stamped["publication"] = publication
    return stamped


def read_entry_file(path: Path) -> dict[str, Any]:
    """Read and validate one entry file (never follows a link, never reads past the cap)."""
    if path.is_symlink():
        raise EntryError(f"{BAD_ENTRY_PATH}: a link")
    with open(path, "rb") as handle:
        return parse_entry(handle.read(MAX_ENTRY_BYTES + 1))


def results_path(settings: Settings, submission_id: str) -> Path:
    """Where the worker keeps a submission's stamped entries (next to its archive)."""
    return storage.submission_dir(settings, submission_id) / "results.json"


def write_results(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Store the stamped entries durably and atomically (files.write_atomically)."""
    write_atomically(path, json.dumps({"entries": entries}, ensure_ascii=False), mode=0o644)


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The stamped entries of an evaluated submission ({} if none)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = value.get("entries") if isinstance(value, dict) else None
    return entries if isinstance(entries, dict) else {}


def entry_for(entries: dict[str, dict[str, Any]], entry_path: str) -> dict[str, Any] | None:
    """The entry a leaderboard reading `entry_path` gets from these results."""
    return entries.get(entry_path) or entries.get(COMMAND_OUTPUT)
