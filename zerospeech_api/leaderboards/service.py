"""Leaderboards: create, publish entries, rank by a dotted key, compile, import and export."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from zerospeech_api.db.tables import (
    Benchmark,
    Leaderboard,
    LeaderboardEntry,
    Submission,
    SubmissionStatus,
    utcnow,
)
from zerospeech_api.errors import BadRequest, Conflict, NotFound
from zerospeech_api.leaderboards.entries import (
    MAX_DEPTH,
    MAX_ENTRY_BYTES,
    EntryError,
    check_value,
    loads,
    parse_entry,
    public_entry,
)
from zerospeech_api.leaderboards.results import (
    entry_for,
    read_results,
    results_path,
    stamp,
    submission_facts,
)
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage
from zerospeech_api.submissions.archive import UnpackError, read_member, safe_member_path

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
SORT_KEY_RE = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")
# What a spreadsheet may run as a formula (OWASP CSV injection; full-width forms too), checked
# after the leading whitespace and control characters an importer may skip.
CSV_FORMULA = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")
CSV_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CSV_SKIPPED = re.compile(r"[\s\x00-\x1f\x7f-\x9f]*")

BAD_LABEL = "leaderboard label: letters, digits, '_', '.', '-' (1 to 100, starting alphanumeric)"
BAD_SORT_KEY = "sort key must be a dotted path such as scores.lexical.all.test"
LABEL_TAKEN = "a leaderboard with this label already exists"
PRIVATE_BENCHMARK = "benchmark {id} is private: its entries never reach a public leaderboard"
NO_LEADERBOARD = "no leaderboard {label}"
NO_ENTRY = "no entry {entry_id} on leaderboard {label}"
BAD_DOCUMENT = 'a leaderboard file is a JSON object {"last_modified": ..., "data": [entries]}'

Progress = Callable[[int], None]
# What a compiled leaderboard depends on (leaderboard_version): equal versions, equal bytes.
Version = tuple[object, ...]


# --- definitions --------------------------------------------------------------------------


def create_leaderboard(
    *,
    session: Session,
    label: str,
    benchmark_id: str,
    entry_path: str,
    sort_key: str,
    descending: bool,
) -> Leaderboard:
    """A new leaderboard of a public benchmark."""
    if not LABEL_RE.match(label):
        raise BadRequest(BAD_LABEL)
    if not SORT_KEY_RE.match(sort_key):
        raise BadRequest(BAD_SORT_KEY)
    try:
        clean = safe_member_path(entry_path)
    except UnpackError as exc:
        raise BadRequest(f"entry path: {exc.reason}") from None
    if str(clean) == ".":
        raise BadRequest("entry path must name a file inside the archive")
    benchmark = session.get(Benchmark, benchmark_id)
    if benchmark is None:
        raise NotFound(f"no benchmark {benchmark_id}")
    if benchmark.private:
        raise Conflict(PRIVATE_BENCHMARK.format(id=benchmark_id))
    if session.scalar(select(Leaderboard.id).where(Leaderboard.label == label)) is not None:
        raise Conflict(LABEL_TAKEN)
    leaderboard = Leaderboard(
        label=label,
        benchmark_id=benchmark_id,
        entry_path=str(clean),
        sort_key=sort_key,
        descending=descending,
        archived=False,
    )
    session.add(leaderboard)
    session.flush()
    return leaderboard


def get_leaderboard(*, session: Session, label: str, public: bool = True) -> Leaderboard:
    """The leaderboard with this label (public reads never see a private benchmark's)."""
    leaderboard = session.scalar(select(Leaderboard).where(Leaderboard.label == label))
    if leaderboard is None or (public and leaderboard.benchmark.private):
        raise NotFound(NO_LEADERBOARD.format(label=label))
    return leaderboard


def list_leaderboards(
    *, session: Session, benchmark_id: str | None = None, public: bool = True
) -> list[tuple[Leaderboard, int]]:
    """Leaderboards with their entry counts, by benchmark then label."""
    counts = (
        select(LeaderboardEntry.leaderboard_id, func.count().label("n"))
        .group_by(LeaderboardEntry.leaderboard_id)
        .subquery()
    )
    query = (
        select(Leaderboard, func.coalesce(counts.c.n, 0))
        .join(Benchmark, Benchmark.id == Leaderboard.benchmark_id)
        .outerjoin(counts, counts.c.leaderboard_id == Leaderboard.id)
        .order_by(Leaderboard.benchmark_id, Leaderboard.label)
    )
    if public:
        query = query.where(Benchmark.private.is_(False))
    if benchmark_id is not None:
        query = query.where(Leaderboard.benchmark_id == benchmark_id)
    return [(lb, int(n)) for lb, n in session.execute(query).all()]


def benchmark_leaderboards(*, session: Session, benchmark_id: str) -> list[tuple[Leaderboard, int]]:
    """The public leaderboards of one benchmark with their entry counts (none for a private
    benchmark); NotFound if there is no such benchmark."""
    if session.get(Benchmark, benchmark_id) is None:
        raise NotFound(f"no benchmark {benchmark_id}")
    return list_leaderboards(session=session, benchmark_id=benchmark_id)


def counted_leaderboard(*, session: Session, label: str) -> tuple[Leaderboard, int]:
    """A public leaderboard and its number of entries."""
    leaderboard = get_leaderboard(session=session, label=label)
    count = session.scalar(
        select(func.count()).where(LeaderboardEntry.leaderboard_id == leaderboard.id)
    )
    return leaderboard, int(count or 0)


def set_archived(*, session: Session, label: str, archived: bool) -> Leaderboard:
    """Archive (no new entries; still readable) or re-open a leaderboard."""
    leaderboard = get_leaderboard(session=session, label=label, public=False)
    leaderboard.archived = archived
    leaderboard.updated_at = utcnow()
    return leaderboard


# --- publishing ---------------------------------------------------------------------------


def _lock(session: Session, leaderboard_id: int) -> Leaderboard:
    # Serialises publish/rebuild/import of one leaderboard on PostgreSQL (SQLite: BEGIN IMMEDIATE).
    return session.scalars(
        select(Leaderboard).where(Leaderboard.id == leaderboard_id).with_for_update()
    ).one()


def _new_entry(
    leaderboard: Leaderboard, submission_id: str | None, data: dict[str, Any], now: dt.datetime
) -> LeaderboardEntry:
    return LeaderboardEntry(
        leaderboard_id=leaderboard.id,
        submission_id=submission_id,
        data=data,
        created_at=now,
        updated_at=now,
    )


def _put(
    session: Session, leaderboard: Leaderboard, submission_id: str, data: dict[str, Any]
) -> None:
    now = utcnow()
    existing = session.scalar(
        select(LeaderboardEntry).where(
            LeaderboardEntry.leaderboard_id == leaderboard.id,
            LeaderboardEntry.submission_id == submission_id,
        )
    )
    if existing is None:
        session.add(_new_entry(leaderboard, submission_id, data, now))
    else:
        existing.data = data
        existing.updated_at = now
    leaderboard.updated_at = now


def publish(
    *, session: Session, submission: Submission, entries: dict[str, dict[str, Any]]
) -> list[str]:
    """Put the submission's entries on every open leaderboard of its benchmark that reads them.

    A private benchmark (such as `test-challenge`) publishes nowhere. Returns the labels.
    """
    if submission.benchmark.private:
        return []
    published = []
    for leaderboard in session.scalars(
        select(Leaderboard)
        .where(
            Leaderboard.benchmark_id == submission.benchmark_id,
            Leaderboard.archived.is_(False),
        )
        .order_by(Leaderboard.id)
    ).all():
        entry = entry_for(entries, leaderboard.entry_path)
        if entry is None:
            continue
        _put(session, _lock(session, leaderboard.id), submission.id, entry)
        published.append(leaderboard.label)
    return published


def unpublish(*, session: Session, submission_id: str) -> int:
    """Remove a submission's entries from every leaderboard (it is no longer completed)."""
    ids = session.scalars(
        select(LeaderboardEntry.leaderboard_id).where(
            LeaderboardEntry.submission_id == submission_id
        )
    ).all()
    if not ids:
        return 0
    now = utcnow()
    for leaderboard_id in set(ids):
        _lock(session, leaderboard_id).updated_at = now
    session.execute(delete(LeaderboardEntry).where(LeaderboardEntry.submission_id == submission_id))
    return len(ids)


# --- ranking and compiling ----------------------------------------------------------------


def dotted_get(data: Any, key: str) -> Any:
    """`data["a"]["b"]` for key `a.b`; None when any step is missing."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def sort_value(data: dict[str, Any], key: str) -> float | None:
    """The numeric ranking value, or None (missing, null, not a number, not comparable as a
    float: ranks last). Never raises, whatever is stored."""
    value = dotted_get(data, key)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):  # text that is no number; an int beyond a float
        return None
    return number if math.isfinite(number) else None


def rank(
    entries: Iterable[dict[str, Any]], *, sort_key: str, descending: bool
) -> list[dict[str, Any]]:
    """Entries ordered best first, missing values last, each with its 1-based `index`."""
    keyed = [(sort_value(e, sort_key), n, e) for n, e in enumerate(entries)]
    present = [(value, n, e) for value, n, e in keyed if value is not None]
    missing = [e for value, _, e in keyed if value is None]
    present.sort(key=lambda k: (-k[0] if descending else k[0], k[1]))
    ordered = [e for _, _, e in present] + missing
    return [
        {"index": i, **{k: v for k, v in e.items() if k != "index"}}
        for i, e in enumerate(ordered, 1)
    ]


def leaderboard_version(*, session: Session, label: str) -> Version | None:
    """What the compiled leaderboard depends on; None if it does not exist or is private."""
    row = session.execute(
        select(
            Leaderboard.id,
            Leaderboard.updated_at,
            Leaderboard.sort_key,
            Leaderboard.descending,
            Leaderboard.archived,
            func.count(LeaderboardEntry.id),
            func.max(LeaderboardEntry.updated_at),
        )
        .join(Benchmark, Benchmark.id == Leaderboard.benchmark_id)
        .outerjoin(LeaderboardEntry, LeaderboardEntry.leaderboard_id == Leaderboard.id)
        .where(Leaderboard.label == label, Benchmark.private.is_(False))
        .group_by(
            Leaderboard.id,
            Leaderboard.updated_at,
            Leaderboard.sort_key,
            Leaderboard.descending,
            Leaderboard.archived,
        )
    ).first()
    return tuple(row) if row is not None else None


def compile_leaderboard(*, session: Session, leaderboard: Leaderboard) -> dict[str, Any]:
    """`{"last_modified": ISO, "data": [ranked entries]}`, strict JSON whatever is stored."""
    rows = session.execute(
        select(LeaderboardEntry.data, LeaderboardEntry.updated_at)
        .where(LeaderboardEntry.leaderboard_id == leaderboard.id)
        .order_by(LeaderboardEntry.id)
    ).all()
    last = max([leaderboard.updated_at, *(r.updated_at for r in rows)])
    data = rank(
        (public_entry(r.data) for r in rows),
        sort_key=leaderboard.sort_key,
        descending=leaderboard.descending,
    )
    return {"last_modified": last.isoformat(), "data": data}


# --- CSV ----------------------------------------------------------------------------------


def flatten(data: dict[str, Any], prefix: str = "", depth: int = 1) -> dict[str, Any]:
    """Nested objects become dotted keys (to `MAX_DEPTH` levels); lists and deeper objects
    become JSON text."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth < MAX_DEPTH:
            flat.update(flatten(value, f"{name}.", depth + 1))
        elif isinstance(value, list | dict):
            flat[name] = json.dumps(value, ensure_ascii=False, allow_nan=False)
        else:
            flat[name] = value
    return flat


def csv_cell(value: Any) -> str:
    """Text of one cell; text a spreadsheet could run as a formula gets a leading quote.

    Risky text starts with a control character (tab, CR...) or, once the leading whitespace
    and control characters are skipped, with a formula character.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value)
    if text[:1].isalnum():  # the usual case, settled without a regular expression
        return text
    skipped = CSV_SKIPPED.match(text)
    start = skipped.end() if skipped else 0  # the pattern matches every text, if only ""
    risky = CSV_CONTROL.match(text) or text.startswith(CSV_FORMULA, start)
    return "'" + text if risky else text


def to_csv(compiled: dict[str, Any]) -> str:
    """The ranked entries as RFC 4180 CSV (CRLF rows; a cell with a comma, quote, CR or LF is
    quoted) with one column per dotted key (first-seen order)."""
    rows = [flatten(entry) for entry in compiled["data"]]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([csv_cell(c) for c in columns])
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
    return out.getvalue()


# --- import, rebuild ----------------------------------------------------------------------


def parse_document(raw: bytes) -> list[dict[str, Any]]:
    """The entries of a historic `{"last_modified", "data": [...]}` file (checked on import)."""
    try:
        document = loads(raw, what="leaderboard file")
    except EntryError as exc:
        raise BadRequest(f"{exc}; {BAD_DOCUMENT}") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise BadRequest(BAD_DOCUMENT)
    entries: list[dict[str, Any]] = document["data"]
    check_entries(entries)
    return entries


def check_entries(entries: list[Any]) -> None:
    """BadRequest naming the first entry that is not an object or breaks the entry rules."""
    for n, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise BadRequest(f"{BAD_DOCUMENT}: entry {n} is not an object")
        try:
            check_value(entry)
        except EntryError as exc:
            raise BadRequest(f"entry {n}: {exc}") from None


def import_entries(
    *,
    session: Session,
    label: str,
    entries: list[dict[str, Any]],
    progress: Progress | None = None,
) -> int:
    """Replace the leaderboard's imported (submission-less) entries with these.

    All or nothing: an entry that is not an object or breaks the entry rules refuses the import.
    """
    check_entries(entries)
    leaderboard = _lock(session, get_leaderboard(session=session, label=label, public=False).id)
    session.execute(
        delete(LeaderboardEntry).where(
            LeaderboardEntry.leaderboard_id == leaderboard.id,
            LeaderboardEntry.submission_id.is_(None),
        )
    )
    now = utcnow()
    for entry in entries:
        data = {k: v for k, v in entry.items() if k != "index"}
        session.add(_new_entry(leaderboard, None, data, now))
        if progress:
            progress(1)
    leaderboard.updated_at = now
    return len(entries)


def collect_entry(
    *, settings: Settings, submission: Submission, entry_path: str
) -> dict[str, Any] | None:
    """A completed submission's entry for `entry_path`: from its results, else its archive;
    None if neither has one that follows the entry rules."""
    found = entry_for(read_results(results_path(settings, submission.id)), entry_path)
    archive = storage.archive_path(settings, submission.id)
    try:
        if found is not None:
            check_value(found)  # results written before the entry rules may break them
            return found
        if not submission.has_scores or not archive.is_file():
            return None
        raw = read_member(archive, entry_path, max_bytes=MAX_ENTRY_BYTES)
        return stamp(parse_entry(raw), submission_facts(submission)) if raw else None
    except (UnpackError, EntryError):
        return None


def rebuild(
    *,
    session: Session,
    settings: Settings,
    label: str,
    progress: Progress | None = None,
) -> int:
    """Re-collect the live entries from the benchmark's completed submissions."""
    leaderboard = _lock(session, get_leaderboard(session=session, label=label, public=False).id)
    if leaderboard.benchmark.private:
        raise Conflict(PRIVATE_BENCHMARK.format(id=leaderboard.benchmark_id))
    session.execute(
        delete(LeaderboardEntry).where(
            LeaderboardEntry.leaderboard_id == leaderboard.id,
            LeaderboardEntry.submission_id.is_not(None),
        )
    )
    submissions = session.scalars(
        select(Submission)
        .where(
            Submission.benchmark_id == leaderboard.benchmark_id,
            Submission.status == SubmissionStatus.COMPLETED,
        )
        .order_by(Submission.created_at)
    ).all()
    count = 0
    for submission in submissions:
        entry = collect_entry(
            settings=settings, submission=submission, entry_path=leaderboard.entry_path
        )
        if entry is not None:
            _put(session, leaderboard, submission.id, entry)
            count += 1
        if progress:
            progress(1)
    leaderboard.updated_at = utcnow()
    return count


def submissions_to_rebuild(*, session: Session, label: str) -> int:
    """How many submissions a rebuild will look at (for a progress bar)."""
    leaderboard = get_leaderboard(session=session, label=label, public=False)
    count = session.scalar(
        select(func.count()).where(
            Submission.benchmark_id == leaderboard.benchmark_id,
            Submission.status == SubmissionStatus.COMPLETED,
        )
    )
    return count or 0
