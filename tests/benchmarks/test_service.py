"""Benchmark service on SQLite and PostgreSQL: dates, quota, size limit, create/update/close."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.helpers.factories import make_benchmark, make_model, make_user
from zerospeech_api.benchmarks import service
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Benchmark, Submission, SubmissionStatus, utcnow
from zerospeech_api.errors import BadRequest, Conflict, Forbidden, NotFound, TooManyRequests
from zerospeech_api.settings import Settings

TODAY = dt.date(2024, 6, 15)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3/1d", (3, 86400)), ("10/12h", (10, 43200)), ("1/30m", (1, 1800)), (" 5 / 7d ", (5, 604800)),
     ("2/1w", (2, 604800)), ("4/90s", (4, 90))],
)  # fmt: skip
def test_parse_quota(text: str, expected: tuple[int, int]) -> None:
    assert service.parse_quota(text) == expected
    count, seconds = expected
    assert service.parse_quota(f"{count}/{service.format_period(seconds)}") == expected


@pytest.mark.parametrize("text", ["", "3", "3/", "/1d", "0/1d", "3/0d", "3/1y", "-1/1d", "a/b"])
def test_bad_quota_is_refused_with_the_syntax(text: str) -> None:
    with pytest.raises(BadRequest, match="N/PERIOD"):
        service.parse_quota(text)


def _bench(**kw: object) -> Benchmark:
    values: dict[str, object] = {
        "id": "b",
        "label": "B",
        "start_date": dt.date(2024, 1, 1),
        "end_date": None,
        "active": True,
    }
    values.update(kw)
    return Benchmark(**values)


@pytest.mark.parametrize(
    ("fields", "open_", "why"),
    [
        ({}, True, None),
        ({"end_date": TODAY}, True, None),  # the end date is the last day
        ({"start_date": TODAY}, True, None),
        ({"active": False}, False, "closed"),
        ({"start_date": TODAY + dt.timedelta(days=1)}, False, "opens on 2024-06-16"),
        ({"end_date": TODAY - dt.timedelta(days=1)}, False, "ended on 2024-06-14"),
    ],
)
def test_open_means_active_started_and_not_ended(fields: dict, open_: bool, why: str) -> None:
    benchmark = _bench(**fields)
    assert service.is_open(benchmark, on=TODAY) is open_
    assert service.closed_reason(benchmark, on=TODAY) == why
    if not open_:
        with pytest.raises(Forbidden, match=why):
            service.require_open(benchmark, on=TODAY)


def test_archive_limit_defaults_to_the_setting(make_settings) -> None:
    settings: Settings = make_settings(default_max_archive_bytes=12345)
    assert service.archive_limit(_bench(), settings) == 12345
    assert service.archive_limit(_bench(max_archive_bytes=99), settings) == 99


def test_create_update_close_and_info(db: Database, settings: Settings) -> None:
    with db.transaction() as session:
        created = service.create_benchmark(
            session=session,
            benchmark_id="sLM21",
            label="Spoken LM",
            url="https://zerospeech.com/sLM21",
            end_date=dt.date(2099, 1, 1),
            quota="3/1d",
            max_archive_bytes=5_000,
        )
        assert created.start_date == service.today()
        assert created.evaluator is not None and created.evaluator.name == "scores"
    with db.transaction() as session:
        service.update_benchmark(
            session=session, benchmark_id="sLM21", quota=None, end_date=None, evaluator=None
        )
    with db.session(read_only=True) as session:
        benchmark = service.get_benchmark(session=session, benchmark_id="sLM21")
        info = service.benchmark_info(benchmark, settings=settings, on=service.today())
    assert info["quota"] is None and info["end_date"] is None and info["evaluator"] is None
    assert info["is_open"] and info["max_archive_bytes"] == 5_000
    with db.transaction() as session:
        service.close_benchmark(session=session, benchmark_id="sLM21")
    with db.session(read_only=True) as session:
        benchmark = service.get_benchmark(session=session, benchmark_id="sLM21")
        assert not benchmark.active
        assert [b.id for b in service.list_benchmarks(session=session)] == ["sLM21"]
        listed = service.list_benchmarks(session=session, include_private=True)
        assert [b.id for b in listed] == ["sLM21", "test-challenge"]


def test_create_refuses_bad_input_and_duplicates(db: Database) -> None:
    make_benchmark(db, "dup")
    cases = [
        ({"benchmark_id": "dup"}, Conflict, "already exists"),
        ({"benchmark_id": "../x"}, BadRequest, "invalid benchmark id"),
        ({"benchmark_id": "a" * 65}, BadRequest, "invalid benchmark id"),
        ({"evaluator": "nope"}, NotFound, "no evaluator named nope"),
        ({"quota": "lots"}, BadRequest, "N/PERIOD"),
        (
            {"start_date": dt.date(2024, 2, 1), "end_date": dt.date(2024, 1, 1)},
            BadRequest,
            "before start date",
        ),
    ]
    for overrides, error, message in cases:
        values: dict[str, object] = {"benchmark_id": "new", "label": "L", "url": "u"}
        values.update(overrides)
        with pytest.raises(error, match=message), db.transaction() as session:
            service.create_benchmark(session=session, **values)  # type: ignore[arg-type]
    with db.session(read_only=True) as session:
        assert session.get(Benchmark, "new") is None
        with pytest.raises(NotFound):
            service.get_benchmark(session=session, benchmark_id="missing")


def _submission(db: Database, user, model_id: str, bench: str, status: str, age: dt.timedelta):
    with db.transaction() as session:
        n = session.query(Submission).count()
        session.add(
            Submission(
                id=f"s{n}-{bench}",
                user_id=user.id,
                model_id=model_id,
                benchmark_id=bench,
                filename="a.zip",
                archive_hash="0" * 32,
                status=status,
                created_at=utcnow() - age,
            )
        )


def test_quota_counts_recent_live_submissions_only(db: Database, settings: Settings) -> None:
    user, other = make_user(db, settings), make_user(db, settings)
    make_benchmark(db, "q", quota="2/1d")
    make_benchmark(db, "elsewhere")
    model = make_model(db, user)
    other_model = make_model(db, other)
    hour = dt.timedelta(hours=1)
    # Not counted: too old, failed/invalid/cancelled, another benchmark, another user.
    _submission(db, user, model, "q", SubmissionStatus.COMPLETED, dt.timedelta(days=2))
    for status in (SubmissionStatus.FAILED, SubmissionStatus.INVALID, SubmissionStatus.CANCELLED):
        _submission(db, user, model, "q", status, hour)
    _submission(db, user, model, "elsewhere", SubmissionStatus.UPLOADING, hour)
    _submission(db, other, other_model, "q", SubmissionStatus.UPLOADING, hour)

    def check() -> None:
        with db.transaction() as session:
            benchmark = service.get_benchmark(session=session, benchmark_id="q")
            service.require_quota(session=session, benchmark=benchmark, user=user, now=utcnow())

    check()
    _submission(db, user, model, "q", SubmissionStatus.UPLOADING, 3 * hour)
    check()
    _submission(db, user, model, "q", SubmissionStatus.COMPLETED, hour)
    with pytest.raises(TooManyRequests, match="quota of benchmark q used up: 2 per 1d") as caught:
        check()
    # The oldest counted one (3 h old) leaves the 1-day window in about 21 hours.
    retry_after = int(caught.value.headers["Retry-After"])  # type: ignore[index]
    assert 21 * 3600 - 60 <= retry_after <= 21 * 3600 + 60
