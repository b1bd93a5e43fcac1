"""Benchmarks: lookup, open/closed, per-user quota, archive size limit, create/update/close."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from zerospeech_api.builtin_rows import SCORES_EVALUATOR
from zerospeech_api.db.tables import Benchmark, Evaluator, Submission, SubmissionStatus, User
from zerospeech_api.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests
from zerospeech_api.settings import Settings

# Messages (tests import them).
NO_BENCHMARK = "no benchmark {id}"
BENCHMARK_EXISTS = "benchmark {id} already exists"
BAD_BENCHMARK_ID = (
    "invalid benchmark id {id!r}: 1 to 64 letters, digits, '_' or '-', starting with a letter or "
    "digit"
)
NOT_OPEN = "benchmark {id} is not open for submissions ({why})"
NO_EVALUATOR = "no evaluator named {name}"
BAD_QUOTA = "invalid quota {text!r}: use N/PERIOD such as 3/1d, 10/12h, 1/30m or 5/7d"
BAD_DATES = "end date {end} is before start date {start}"
QUOTA_USED = (
    "submission quota of benchmark {id} used up: {count} per {period}; "
    "the next submission is possible in {wait}"
)

_ID_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_QUOTA = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*([smhdw])\s*")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Submissions in these states do not use up the quota (deleted ones are gone from the table).
NOT_COUNTED = (SubmissionStatus.FAILED, SubmissionStatus.INVALID, SubmissionStatus.CANCELLED)

UNSET: Any = object()  # "leave unchanged" in update_benchmark


def today() -> dt.date:
    """Today's date in UTC (benchmark dates are calendar days, UTC)."""
    return dt.datetime.now(dt.UTC).date()


def parse_quota(text: str) -> tuple[int, int]:
    """`N/PERIOD` (e.g. `3/1d`, `10/12h`, `1/30m`) as (count, period in seconds)."""
    match = _QUOTA.fullmatch(text)
    if not match:
        raise BadRequest(BAD_QUOTA.format(text=text))
    count, amount, unit = int(match[1]), int(match[2]), match[3]
    seconds = amount * _UNIT_SECONDS[unit]
    if count < 1 or seconds < 1:
        raise BadRequest(BAD_QUOTA.format(text=text))
    return count, seconds


def format_period(seconds: int) -> str:
    """The shortest exact `N<unit>` form of a period (86400 -> `1d`)."""
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def format_quota(benchmark: Benchmark) -> str | None:
    """`N/PERIOD`, or None without a quota."""
    if benchmark.quota_count is None or benchmark.quota_period_seconds is None:
        return None
    return f"{benchmark.quota_count}/{format_period(benchmark.quota_period_seconds)}"


def is_open(benchmark: Benchmark, *, on: dt.date) -> bool:
    """Active, started, and not past its end date."""
    return closed_reason(benchmark, on=on) is None


def closed_reason(benchmark: Benchmark, *, on: dt.date) -> str | None:
    """Why the benchmark refuses submissions on that day, or None when it is open."""
    if not benchmark.active:
        return "closed"
    if benchmark.start_date > on:
        return f"opens on {benchmark.start_date.isoformat()}"
    if benchmark.end_date is not None and benchmark.end_date < on:
        return f"ended on {benchmark.end_date.isoformat()}"
    return None


def archive_limit(benchmark: Benchmark, settings: Settings) -> int:
    """The largest archive this benchmark accepts, in bytes."""
    return benchmark.max_archive_bytes or settings.default_max_archive_bytes


def get_benchmark(*, session: Session, benchmark_id: str) -> Benchmark:
    """The benchmark, or `NotFound`."""
    benchmark = session.get(Benchmark, benchmark_id) if _ID_OK.fullmatch(benchmark_id) else None
    if benchmark is None:
        raise NotFound(NO_BENCHMARK.format(id=benchmark_id))
    return benchmark


def list_benchmarks(*, session: Session, include_private: bool = False) -> Sequence[Benchmark]:
    """Benchmarks by id; private ones (like `test-challenge`) only when asked."""
    query = select(Benchmark).order_by(Benchmark.id)
    if not include_private:
        query = query.where(Benchmark.private.is_(False))
    return session.scalars(query).all()


def require_open(benchmark: Benchmark, *, on: dt.date) -> None:
    """`Forbidden` unless the benchmark accepts submissions that day."""
    reason = closed_reason(benchmark, on=on)
    if reason is not None:
        raise Forbidden(NOT_OPEN.format(id=benchmark.id, why=reason))


@dataclass(frozen=True)
class QuotaUsage:
    """A user's quota on one benchmark now: `limit` None means no quota (then `remaining` and
    `next_slot_at` are None too); `next_slot_at` is when one more submission becomes possible,
    None while nothing in the window uses a slot."""

    limit: int | None
    period_seconds: int | None
    used: int
    remaining: int | None
    next_slot_at: dt.datetime | None


def _counted(benchmark: Benchmark, user: User, since: dt.datetime) -> Any:
    return (
        Submission.user_id == user.id,
        Submission.benchmark_id == benchmark.id,
        Submission.created_at > since,
        Submission.status.not_in([str(s) for s in NOT_COUNTED]),
    )


def quota_usage(
    *, session: Session, benchmark: Benchmark, user: User, now: dt.datetime
) -> QuotaUsage:
    """How much of the benchmark's sliding-window quota the user has used, and when a slot frees."""
    if benchmark.quota_count is None or benchmark.quota_period_seconds is None:
        return QuotaUsage(None, None, 0, None, None)
    period = dt.timedelta(seconds=benchmark.quota_period_seconds)
    since = now - period
    conditions = _counted(benchmark, user, since)
    used = session.scalar(select(func.count()).select_from(Submission).where(*conditions)) or 0
    # The next slot frees when the k-th newest counted submission leaves the window, k being
    # min(used, limit): the oldest one while slots remain, the limit-th newest when none do.
    kth = (
        session.scalar(
            select(Submission.created_at)
            .where(*conditions)
            .order_by(Submission.created_at.desc())
            .offset(min(used, benchmark.quota_count) - 1)
            .limit(1)
        )
        if used
        else None
    )
    return QuotaUsage(
        limit=benchmark.quota_count,
        period_seconds=benchmark.quota_period_seconds,
        used=used,
        remaining=max(0, benchmark.quota_count - used),
        next_slot_at=kth + period if kth is not None else None,
    )


def require_quota(*, session: Session, benchmark: Benchmark, user: User, now: dt.datetime) -> None:
    """`TooManyRequests` (with Retry-After) when the user used up the benchmark's quota.

    Call inside the write transaction that creates the submission: the user's row is locked on
    PostgreSQL (SQLite write transactions are serialised already), so two concurrent requests
    cannot both take the last slot.
    """
    if benchmark.quota_count is None or benchmark.quota_period_seconds is None:
        return
    session.execute(select(User.id).where(User.id == user.id).with_for_update())
    usage = quota_usage(session=session, benchmark=benchmark, user=user, now=now)
    if usage.remaining or usage.next_slot_at is None:
        return
    wait = max(1, math.ceil((usage.next_slot_at - now).total_seconds()))
    raise TooManyRequests(
        QUOTA_USED.format(
            id=benchmark.id,
            count=benchmark.quota_count,
            period=format_period(benchmark.quota_period_seconds),
            wait=format_wait(wait),
        ),
        retry_after=wait,
    )


def user_quotas(
    *, session: Session, user: User, now: dt.datetime
) -> list[tuple[Benchmark, QuotaUsage]]:
    """The user's quota on every open benchmark: the public ones, and the private ones (such as
    test-challenge) the user has submitted to; private benchmarks are not shown to others."""
    mine = select(Submission.benchmark_id).where(Submission.user_id == user.id)
    candidates = session.scalars(
        select(Benchmark)
        .where(Benchmark.private.is_(False) | Benchmark.id.in_(mine))
        .order_by(Benchmark.id)
    ).all()
    return [
        (b, quota_usage(session=session, benchmark=b, user=user, now=now))
        for b in candidates
        if is_open(b, on=now.date())
    ]


def format_wait(seconds: int) -> str:
    """A rough human duration (`2h 5m`, `40s`)."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m")) if v]
    return " ".join(parts[:2]) if parts else f"{secs}s"


def _evaluator_id(session: Session, name: str | None) -> int | None:
    if name is None:
        return None
    evaluator = session.scalar(select(Evaluator).where(Evaluator.name == name))
    if evaluator is None:
        raise NotFound(NO_EVALUATOR.format(name=name))
    return evaluator.id


def _parse_optional_quota(quota: str | None) -> tuple[int | None, int | None]:
    return parse_quota(quota) if quota else (None, None)


def _check_archive_bytes(max_archive_bytes: int | None) -> None:
    if max_archive_bytes is not None and max_archive_bytes < 1:
        raise BadRequest("the maximum archive size must be a positive number of bytes")


def _check_dates(start: dt.date, end: dt.date | None) -> None:
    if end is not None and end < start:
        raise BadRequest(BAD_DATES.format(start=start.isoformat(), end=end.isoformat()))


def create_benchmark(
    *,
    session: Session,
    benchmark_id: str,
    label: str,
    url: str,
    start_date: dt.date | None = None,
    end_date: dt.date | None = None,
    auto_eval: bool = True,
    evaluator: str | None = SCORES_EVALUATOR,
    quota: str | None = None,
    max_archive_bytes: int | None = None,
    private: bool = False,
) -> Benchmark:
    """A new active benchmark (starting today unless told); `quota` is `N/PERIOD`."""
    if not _ID_OK.fullmatch(benchmark_id):
        raise BadRequest(BAD_BENCHMARK_ID.format(id=benchmark_id))
    if session.get(Benchmark, benchmark_id) is not None:
        raise Conflict(BENCHMARK_EXISTS.format(id=benchmark_id))
    start = start_date or today()
    _check_dates(start, end_date)
    count, period = _parse_optional_quota(quota)
    _check_archive_bytes(max_archive_bytes)
    benchmark = Benchmark(
        id=benchmark_id,
        label=label,
        url=url,
        start_date=start,
        end_date=end_date,
        active=True,
        auto_eval=auto_eval,
        evaluator_id=_evaluator_id(session, evaluator),
        quota_count=count,
        quota_period_seconds=period,
        max_archive_bytes=max_archive_bytes,
        private=private,
    )
    session.add(benchmark)
    session.flush()
    return benchmark


def update_benchmark(
    *,
    session: Session,
    benchmark_id: str,
    label: str = UNSET,
    url: str = UNSET,
    start_date: dt.date = UNSET,
    end_date: dt.date | None = UNSET,
    active: bool = UNSET,
    auto_eval: bool = UNSET,
    evaluator: str | None = UNSET,
    quota: str | None = UNSET,
    max_archive_bytes: int | None = UNSET,
    private: bool = UNSET,
) -> Benchmark:
    """Change the given fields (None clears end date, evaluator, quota and size limit)."""
    benchmark = get_benchmark(session=session, benchmark_id=benchmark_id)
    simple = {"label": label, "url": url, "active": active, "auto_eval": auto_eval}
    simple |= {"private": private, "start_date": start_date, "end_date": end_date}
    for name, value in simple.items():
        if value is not UNSET:
            setattr(benchmark, name, value)
    if evaluator is not UNSET:
        benchmark.evaluator_id = _evaluator_id(session, evaluator)
    if quota is not UNSET:
        benchmark.quota_count, benchmark.quota_period_seconds = _parse_optional_quota(quota)
    if max_archive_bytes is not UNSET:
        _check_archive_bytes(max_archive_bytes)
        benchmark.max_archive_bytes = max_archive_bytes
    _check_dates(benchmark.start_date, benchmark.end_date)
    session.flush()
    return benchmark


def close_benchmark(*, session: Session, benchmark_id: str) -> Benchmark:
    """Stop accepting submissions now (inactive; its leaderboards stay readable)."""
    benchmark = get_benchmark(session=session, benchmark_id=benchmark_id)
    benchmark.active = False
    session.flush()
    return benchmark


def benchmark_info(benchmark: Benchmark, *, settings: Settings, on: dt.date) -> dict[str, Any]:
    """The public description of a benchmark (the zrc client reads the first seven keys)."""
    return {
        "label": benchmark.label,
        "start_date": benchmark.start_date,
        "end_date": benchmark.end_date,
        "active": benchmark.active,
        "url": benchmark.url,
        "evaluator": benchmark.evaluator_id,
        "auto_eval": benchmark.auto_eval,
        "id": benchmark.id,
        "is_open": is_open(benchmark, on=on),
        "private": benchmark.private,
        "quota": format_quota(benchmark),
        "max_archive_bytes": archive_limit(benchmark, settings),
    }
