"""The demo data: a public demo benchmark and leaderboard of fake entries, made through the
services, created once, and rendered by the public pages."""

from __future__ import annotations

from fastapi.testclient import TestClient

from zerospeech_api.benchmarks.service import is_open, today
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Benchmark
from zerospeech_api.demo import (
    DEMO_BENCHMARK,
    DEMO_LABEL,
    DEMO_LEADERBOARD,
    FAKE,
    demo_entries,
    ensure_demo,
)
from zerospeech_api.leaderboards.definition import defined_columns
from zerospeech_api.leaderboards.service import get_leaderboard


def test_demo_is_created_once_as_an_open_public_benchmark(db: Database) -> None:
    with db.transaction() as session:
        created = ensure_demo(session=session)
    assert f"benchmark {DEMO_BENCHMARK} (demo)" in created
    with db.transaction() as session:
        assert ensure_demo(session=session) == []
        benchmark = session.get(Benchmark, DEMO_BENCHMARK)
        assert benchmark is not None and not benchmark.private and benchmark.auto_eval
        assert is_open(benchmark, on=today()) and "fake" in benchmark.label
        board = get_leaderboard(session=session, label=DEMO_LEADERBOARD)
        columns = defined_columns(board)
        assert columns and columns[0].key == board.sort_key


def test_demo_leaderboard_lists_and_renders_every_fake_entry(client: TestClient, db: Database):
    with db.transaction() as session:
        ensure_demo(session=session)
    listed = client.get("/leaderboards/list").json()["leaderboards"]
    assert [(lb["label"], lb["entries"]) for lb in listed] == [
        (DEMO_LEADERBOARD, len(demo_entries()))
    ]
    data = client.get(f"/leaderboards/{DEMO_LEADERBOARD}/json").json()["data"]
    assert all(entry["description"].startswith(FAKE) for entry in data)
    scores = [entry["scores"]["lexical"]["all"]["test"] for entry in data]
    assert scores == sorted(scores, reverse=True)
    page = client.get(f"/page/leaderboards/{DEMO_LEADERBOARD}")
    assert page.status_code == 200
    assert DEMO_LABEL in page.text and "Lexical (test)" in page.text and "<svg" in page.text
    for entry in demo_entries():
        assert entry["model_id"] in page.text
    assert DEMO_BENCHMARK in client.get("/page/").text
