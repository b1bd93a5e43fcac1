"""Ranking, CSV, import of historic files, publishing rules (on SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from tests.helpers.factories import (
    ENTRY_PATH,
    make_benchmark,
    make_leaderboard,
    make_submission,
    make_user,
    store_entries,
    stored_bad_entries,
)
from tests.helpers.leaderboards import csv_rows, risky_cells, strict_json
from zerospeech_api.db.tables import Submission, SubmissionStatus
from zerospeech_api.errors import BadRequest, Conflict
from zerospeech_api.leaderboards import service
from zerospeech_api.leaderboards.cache import encode
from zerospeech_api.leaderboards.entries import (
    ENTRY_TOO_DEEP,
    NOT_FINITE,
    NUMBER_TOO_LARGE,
    TOO_DEEP,
)
from zerospeech_api.leaderboards.results import results_path, write_results

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


def test_rank_never_raises_and_puts_what_cannot_be_compared_last() -> None:
    entries = [
        entry("huge", 9**400),
        entry("minus-huge", -(9**400)),
        entry("ok", 2),
        entry("text-inf", "1e999"),
        entry("inf", float("inf")),
        entry("long-text", "9" * 5000),
        entry("list", [1]),
        entry("object", {"c": 1}),
        entry("small", -3.5),
    ]
    for descending in (True, False):
        ranked = service.rank(entries, sort_key="scores.a.b", descending=descending)
        assert [e["submission_id"] for e in ranked][:2] == (
            ["ok", "small"] if descending else ["small", "ok"]
        )
        assert len(ranked) == len(entries)


def test_csv_is_rfc_4180_and_neutralises_formulas_after_blanks_and_controls() -> None:
    risky = [
        '\r=HYPERLINK("http://evil")',
        "\t=1+1",
        "  @SUM(A1)",
        "\n+1",
        "\x00-2",
        "\u00a0=1",
        "\uff1d1+1",
        "line one\r\nline two",
        'say "hi", then go',
    ]
    compiled = {
        "last_modified": "2021-01-01T00:00:00+00:00",
        "data": [
            {"index": n, "submission_id": f"s{n}", "description": text, "score": -1.5}
            for n, text in enumerate(risky, 1)
        ],
    }
    text = service.to_csv(compiled)
    rows = csv_rows(text)
    assert len(rows) == 1 + len(risky)
    assert [row[1] for row in rows[1:]] == [f"s{n}" for n in range(1, len(risky) + 1)]
    assert risky_cells(rows) == []
    descriptions = [row[2] for row in rows[1:]]
    assert descriptions[:7] == ["'" + value for value in risky[:7]]  # data kept, after a quote
    assert descriptions[7:] == risky[7:]  # harmless text is left alone
    assert [row[3] for row in rows[1:]] == ["-1.5"] * len(risky)
    assert text.count("\r\n") == len(rows) + 1  # row ends, plus the one inside a quoted cell
    assert text.endswith("\r\n")


def test_stored_values_that_break_the_entry_rules_compile_to_strict_json(db) -> None:
    bench = make_benchmark(db)
    make_leaderboard(db, "lb", bench, sort_key="scores.a.b")
    bad = stored_bad_entries(db)
    store_entries(db, "lb", [entry("good-1", 1.0), *bad, entry("good-2", 2.0)])
    with db.session(read_only=True) as session:
        lb = service.get_leaderboard(session=session, label="lb")
        compiled = service.compile_leaderboard(session=session, leaderboard=lb)
    data = strict_json(encode(compiled).decode())["data"]
    assert [e["submission_id"] for e in data][:2] == ["good-2", "good-1"]
    assert {e["submission_id"] for e in data[2:]} == {e["submission_id"] for e in bad}
    by_id = {e["submission_id"]: e for e in data}
    assert by_id["huge"]["scores"]["a"]["b"] == 9**400  # valid JSON, ranked last
    assert by_id["surrogate"]["description"] == "a\ufffdb"
    if "nan" in by_id:
        assert by_id["nan"]["scores"]["a"]["b"] is None
        assert by_id["inf"]["x"] == [None]
    assert len(csv_rows(service.to_csv(compiled))) == 1 + len(data)


def test_import_refuses_entries_that_break_the_rules_and_keeps_the_old_ones(db) -> None:
    bench = make_benchmark(db)
    make_leaderboard(db, "lb", bench)
    with db.transaction() as session:
        service.import_entries(session=session, label="lb", entries=[entry("kept", 1)])
    for raw, reason in (
        (b'{"data": [{"scores": {"a": 1}}, {"scores": {"a": NaN}}]}', "entry 2: at scores.a"),
        (b'{"data": [{"scores": {"a": 1e999}}]}', NOT_FINITE),
        (b'{"data": [{"n": ' + b"9" * 400 + b"}]}", NUMBER_TOO_LARGE),
        (
            b'{"data": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
            TOO_DEEP.format(what="leaderboard file"),
        ),
        (b'{"data": [{"d": ' + b"[" * 40 + b"]" * 40 + b"}]}", "entry 1: " + ENTRY_TOO_DEEP),
        (b'{"data": [{"d": "\\r=1"}]}', "entry 1: at d: "),
    ):
        with pytest.raises(BadRequest, match=re.escape(reason)):
            service.parse_document(raw)
    with db.transaction() as session, pytest.raises(BadRequest, match="entry 1: at x: NaN"):
        service.import_entries(session=session, label="lb", entries=[{"x": float("nan")}])
    with db.session(read_only=True) as session:
        lb = service.get_leaderboard(session=session, label="lb")
        kept = service.compile_leaderboard(session=session, leaderboard=lb)["data"]
    assert [e["submission_id"] for e in kept] == ["kept"]


def test_rebuild_skips_stored_results_that_break_the_rules(settings, db) -> None:
    user = make_user(db, settings)
    bench = make_benchmark(db)
    make_leaderboard(db, "lb", bench, sort_key="scores.a.b")
    ids = [
        make_submission(db, settings, user, benchmark_id=bench, status=SubmissionStatus.COMPLETED)
        for _ in range(2)
    ]
    write_results(results_path(settings, ids[0]), {ENTRY_PATH: entry(ids[0], float("nan"))})
    write_results(results_path(settings, ids[1]), {ENTRY_PATH: entry(ids[1], 3.0)})
    with db.transaction() as session:
        assert service.rebuild(session=session, settings=settings, label="lb") == 1
    with db.session(read_only=True) as session:
        lb = service.get_leaderboard(session=session, label="lb")
        data = service.compile_leaderboard(session=session, leaderboard=lb)["data"]
    assert [e["submission_id"] for e in data] == [ids[1]]
