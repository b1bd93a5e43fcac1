"""Ranking, CSV, import of historic files, publishing rules (on SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.helpers.builders import make_user
from tests.helpers.evaluation import make_benchmark, make_leaderboard, make_submission
from zerospeech_api.db.tables import Submission
from zerospeech_api.errors import BadRequest, Conflict
from zerospeech_api.leaderboards import service

HISTORIC = Path(__file__).parent / "data" / "slm21-historic.json"


def entry(submission_id: str, value: object) -> dict:
    return {"submission_id": submission_id, "scores": {"a": {"b": value}}}


def test_rank_descending_puts_missing_null_and_non_numbers_last() -> None:
    entries = [
        entry("low", 1.5),
        entry("null", None),
        entry("high", 9),
        {"submission_id": "missing", "scores": {}},
        entry("text", "n/a"),
        entry("bool", True),
        entry("mid", "4.25"),
        entry("nan", float("nan")),
    ]
    ranked = service.rank(entries, sort_key="scores.a.b", descending=True)
    assert [e["submission_id"] for e in ranked][:3] == ["high", "mid", "low"]
    assert {e["submission_id"] for e in ranked[3:]} == {"null", "missing", "text", "bool", "nan"}
    assert [e["index"] for e in ranked] == list(range(1, 9))


def test_rank_ascending_keeps_ties_in_input_order() -> None:
    ranked = service.rank(
        [entry("x", 2), entry("y", 1), entry("z", 1), entry("none", None)],
        sort_key="scores.a.b",
        descending=False,
    )
    assert [e["submission_id"] for e in ranked] == ["y", "z", "x", "none"]


def test_csv_flattens_dotted_keys_and_defuses_formulas() -> None:
    compiled = {
        "last_modified": "2021-01-01T00:00:00+00:00",
        "data": [
            {
                "index": 1,
                "description": '=HYPERLINK("http://evil")',
                "publication": {"author_short": "@me", "authors": "+A, -B"},
                "details": {"benchmarks": ["sLM21"]},
                "scores": {"lexical": {"all": {"test": -0.5}}},
            }
        ],
    }
    rows = list(csv.DictReader(io.StringIO(service.to_csv(compiled))))
    row = rows[0]
    assert row["description"] == '\'=HYPERLINK("http://evil")'
    assert row["publication.author_short"] == "'@me"
    assert row["publication.authors"] == "'+A, -B"
    assert row["details.benchmarks"] == '["sLM21"]'
    assert row["scores.lexical.all.test"] == "-0.5"  # a number is not a formula


def test_create_validates_label_sort_key_entry_path_and_private_benchmark(db) -> None:
    bench = make_benchmark(db)
    with db.transaction() as session:
        for bad in ("bad label", "../x", ""):
            with pytest.raises(BadRequest):
                service.create_leaderboard(
                    session=session,
                    label=bad,
                    benchmark_id=bench,
                    entry_path="scores/leaderboard.json",
                    sort_key="scores.x",
                    descending=True,
                )
        with pytest.raises(BadRequest):
            service.create_leaderboard(
                session=session,
                label="ok",
                benchmark_id=bench,
                entry_path="../etc/passwd",
                sort_key="scores.x",
                descending=True,
            )
        with pytest.raises(BadRequest):
            service.create_leaderboard(
                session=session,
                label="ok",
                benchmark_id=bench,
                entry_path="scores/leaderboard.json",
                sort_key="scores..x",
                descending=True,
            )
        with pytest.raises(Conflict, match="private"):
            service.create_leaderboard(
                session=session,
                label="ok",
                benchmark_id="test-challenge",
                entry_path="scores/leaderboard.json",
                sort_key="scores.x",
                descending=True,
            )


def test_import_then_compile_round_trips_a_historic_file(db) -> None:
    bench = make_benchmark(db)
    make_leaderboard(db, "slm21-lexical", bench)
    original = json.loads(HISTORIC.read_text())
    with db.transaction() as session:
        count = service.import_entries(
            session=session,
            label="slm21-lexical",
            entries=service.parse_document(HISTORIC.read_bytes()),
        )
    assert count == len(original["data"])
    with db.session(read_only=True) as session:
        lb = service.get_leaderboard(session=session, label="slm21-lexical")
        compiled = service.compile_leaderboard(session=session, leaderboard=lb)
    assert compiled["data"] == original["data"]
    # Importing again replaces the imported entries instead of duplicating them.
    with db.transaction() as session:
        service.import_entries(session=session, label="slm21-lexical", entries=original["data"][:3])
    with db.session(read_only=True) as session:
        lb = service.get_leaderboard(session=session, label="slm21-lexical")
        assert len(service.compile_leaderboard(session=session, leaderboard=lb)["data"]) == 3


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b'{"data": {}}', b'{"data": [1]}', b"\xff\xfe"]
)
def test_parse_document_rejects_malformed_files(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        service.parse_document(raw)


def test_publish_skips_private_and_archived_and_matches_entry_paths(settings, db) -> None:
    user = make_user(db, settings)
    bench = make_benchmark(db)
    make_leaderboard(db, "main", bench)
    make_leaderboard(db, "other-file", bench, entry_path="scores/other.json")
    make_leaderboard(db, "closed", bench)
    with db.transaction() as session:
        service.set_archived(session=session, label="closed", archived=True)
    public_id = make_submission(db, settings, user, benchmark_id=bench)
    private_id = make_submission(db, settings, user, benchmark_id="test-challenge")
    entries = {"scores/leaderboard.json": {"submission_id": "s", "scores": {}}}
    with db.transaction() as session:
        published = service.publish(
            session=session, submission=session.get(Submission, public_id), entries=entries
        )
        assert published == ["main"]
        assert (
            service.publish(
                session=session, submission=session.get(Submission, private_id), entries=entries
            )
            == []
        )
    with db.transaction() as session:
        assert service.unpublish(session=session, submission_id=public_id) == 1
