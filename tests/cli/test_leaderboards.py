"""`leaderboards create|list|show|archive|rebuild|import|export` against the database."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.helpers.factories import (
    make_benchmark,
    make_submission,
    make_user,
    realistic_entry,
    store_entries,
    stored_bad_entries,
    submission_files,
    zip_bytes,
)
from tests.helpers.leaderboards import csv_rows, risky_cells, strict_json
from zerospeech_api.evaluation.worker import Worker
from zerospeech_api.leaderboards.entries import NOT_FINITE

HISTORIC = Path(__file__).parents[1] / "leaderboards" / "data" / "slm21-historic.json"


@pytest.fixture
def cli(run_cli):
    return run_cli


def test_create_list_show(cli, db) -> None:
    bench = make_benchmark(db, "sLM21")
    result = cli(
        "leaderboards",
        "create",
        "slm21-lexical",
        "--benchmark",
        bench,
        "--entry-path",
        "scores/leaderboard.json",
        "--sort-key",
        "scores.lexical.all.test",
        "--ascending",
    )
    assert result.exit_code == 0, result.output
    listed = cli("leaderboards", "list").output
    assert "slm21-lexical" in listed and "asc" in listed
    shown = cli("leaderboards", "show", "slm21-lexical").output
    assert "ascending" in shown and "scores.lexical.all.test" in shown


def test_create_refuses_bad_input(cli, db) -> None:
    bench = make_benchmark(db)
    base = ["leaderboards", "create", "lb", "--sort-key", "scores.x"]
    assert "no benchmark nope" in cli(*base, "--benchmark", "nope").output
    private = cli(*base, "--benchmark", "test-challenge")
    assert private.exit_code == 1 and "private" in private.output
    bad_path = cli(*base, "--benchmark", bench, "--entry-path", "/etc/passwd")
    assert bad_path.exit_code == 1 and "absolute" in bad_path.output
    assert cli(*base, "--benchmark", bench).exit_code == 0
    taken = cli(*base, "--benchmark", bench)
    assert taken.exit_code == 1 and "already exists" in taken.output
    assert cli("leaderboards", "show", "nope").exit_code == 1


def test_import_export_round_trip_of_a_historic_leaderboard(cli, db, tmp_path: Path) -> None:
    bench = make_benchmark(db)
    cli(
        "leaderboards",
        "create",
        "hist",
        "--benchmark",
        bench,
        "--sort-key",
        "scores.lexical.all.test",
    )
    imported = cli("leaderboards", "import", "hist", str(HISTORIC))
    assert imported.exit_code == 0, imported.output
    assert "imported 12 entries into hist" in imported.output
    out = tmp_path / "export.json"
    exported = cli("leaderboards", "export", "hist", "--output", str(out))
    assert exported.exit_code == 0, exported.output
    assert json.loads(out.read_text())["data"] == json.loads(HISTORIC.read_text())["data"]
    assert not list(tmp_path.glob(".export.json.*"))  # the temporary file was renamed away
    # Re-importing the export gives the same leaderboard again.
    assert cli("leaderboards", "import", "hist", str(out)).exit_code == 0
    again = json.loads(cli("leaderboards", "export", "hist").output)
    assert again["data"] == json.loads(HISTORIC.read_text())["data"]
    rows = list(
        csv.DictReader(io.StringIO(cli("leaderboards", "export", "hist", "--format", "csv").output))
    )
    assert len(rows) == 12 and rows[0]["index"] == "1"
    assert rows[0]["scores.lexical.all.test"] == "93.0215"
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    refused = cli("leaderboards", "import", "hist", str(bad))
    assert refused.exit_code == 1 and "last_modified" in refused.output


def test_rebuild_recollects_completed_submissions(cli, settings, db) -> None:
    user = make_user(db, settings)
    bench = make_benchmark(db)
    for n in range(3):
        make_submission(
            db,
            settings,
            user,
            benchmark_id=bench,
            archive=zip_bytes(
                submission_files(realistic_entry(n), path="scores/leaderboard.json")
                | {"scores/other.json": json.dumps(realistic_entry(n + 10))}
            ),
        )
    worker = Worker(settings, db=db)
    worker.run(once=True)
    worker.mailer.close()
    # A leaderboard created later, reading another file in the archives, fills up on rebuild.
    cli(
        "leaderboards",
        "create",
        "late",
        "--benchmark",
        bench,
        "--entry-path",
        "scores/other.json",
        "--sort-key",
        "scores.syntactic.test",
    )
    assert json.loads(cli("leaderboards", "export", "late").output)["data"] == []
    rebuilt = cli("leaderboards", "rebuild", "late")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "3 entries from 3 completed submissions" in rebuilt.output
    data = json.loads(cli("leaderboards", "export", "late").output)["data"]
    assert len(data) == 3 and all(e["submitted_by"] == user.username for e in data)
    values = [e["scores"]["syntactic"]["test"] for e in data]
    assert values == sorted(values, reverse=True)
    archived = cli("leaderboards", "archive", "late")
    assert archived.exit_code == 0 and "archived" in archived.output


def test_export_never_crashes_on_stored_entries_breaking_the_rules(cli, db) -> None:
    bench = make_benchmark(db)
    cli("leaderboards", "create", "hist", "--benchmark", bench, "--sort-key", "scores.a.b")
    bad = stored_bad_entries(db)
    store_entries(db, "hist", [{"submission_id": "good", "scores": {"a": {"b": 1}}}, *bad])
    exported = cli("leaderboards", "export", "hist")
    assert exported.exit_code == 0, exported.output
    data = strict_json(exported.output)["data"]
    assert data[0]["submission_id"] == "good" and len(data) == 1 + len(bad)
    as_csv = cli("leaderboards", "export", "hist", "--format", "csv")
    assert as_csv.exit_code == 0, as_csv.output
    rows = csv_rows(as_csv.output)
    assert len(rows) == 2 + len(bad) and risky_cells(rows) == []
    shown = cli("leaderboards", "show", "hist", "--top", "20")
    assert shown.exit_code == 0, shown.output


def test_import_refuses_a_file_breaking_the_entry_rules(cli, db, tmp_path: Path) -> None:
    bench = make_benchmark(db)
    cli("leaderboards", "create", "hist", "--benchmark", bench, "--sort-key", "scores.a")
    assert cli("leaderboards", "import", "hist", str(HISTORIC)).exit_code == 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"last_modified": "x", "data": [{"scores": {"a": 1}}, {"scores": {"a": NaN}}]}')
    refused = cli("leaderboards", "import", "hist", str(bad))
    assert refused.exit_code == 1
    assert "entry 2: at scores.a" in refused.output and NOT_FINITE in refused.output
    assert len(json.loads(cli("leaderboards", "export", "hist").output)["data"]) == 12
