"""Public leaderboard routes through the app: JSON, CSV, entry, lists, ETag / 304, privacy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.helpers.factories import (
    make_benchmark,
    make_leaderboard,
    store_entries,
    stored_bad_entries,
)
from tests.helpers.leaderboards import csv_rows, risky_cells, strict_json
from zerospeech_api.app import create_app
from zerospeech_api.leaderboards import service

HISTORIC = Path(__file__).parent / "data" / "slm21-historic.json"


@pytest.fixture
def board(make_settings, db) -> Iterator[tuple[TestClient, str]]:
    """A client whose app re-checks the database on every read, and a loaded leaderboard."""
    settings = make_settings(database_url=db.url, leaderboard_recheck_seconds=0)
    bench = make_benchmark(db)
    make_leaderboard(db, "slm21", bench)
    with db.transaction() as session:
        service.import_entries(
            session=session,
            label="slm21",
            entries=service.parse_document(HISTORIC.read_bytes()),
        )
    with TestClient(create_app(settings)) as client:
        yield client, bench


def test_json_is_ranked_cacheable_and_304_on_matching_etag(board, db) -> None:
    client, _ = board
    response = client.get("/leaderboards/slm21/json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "public, max-age=60"
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    document = response.json()
    assert [e["index"] for e in document["data"]] == list(range(1, 13))
    assert document["data"][-1]["scores"]["lexical"]["all"]["test"] is None
    cached = client.get("/leaderboards/slm21/json", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == etag
    listed = client.get("/leaderboards/slm21/json", headers={"If-None-Match": f'"x", W/{etag}'})
    assert listed.status_code == 304
    assert (
        client.get("/leaderboards/slm21/json", headers={"If-None-Match": '"x"'}).status_code == 200
    )


def test_any_entry_change_changes_the_etag(board, db) -> None:
    client, _ = board
    first = client.get("/leaderboards/slm21/json").headers["etag"]
    data = json.loads(HISTORIC.read_text())["data"]
    data[5]["description"] = "edited"
    with db.transaction() as session:
        service.import_entries(session=session, label="slm21", entries=data)
    second = client.get("/leaderboards/slm21/json")
    assert second.headers["etag"] != first
    assert (
        client.get("/leaderboards/slm21/json", headers={"If-None-Match": first}).status_code == 200
    )
    assert "edited" in second.text


def test_html_in_free_text_comes_back_as_json_data(board) -> None:
    client, _ = board
    response = client.get("/leaderboards/slm21/json")
    assert response.headers["content-type"] == "application/json"
    descriptions = [e["description"] for e in response.json()["data"]]
    assert '<script>alert("x")</script> baseline' in descriptions
    entry = client.get("/leaderboards/slm21/entry/0b07c1f5e9a34d2b")
    assert entry.headers["content-type"] == "application/json"
    assert entry.json()["description"].startswith("<script>")


def test_csv_download(board) -> None:
    client, _ = board
    response = client.get("/leaderboards/slm21/csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="slm21.csv"' in response.headers["content-disposition"]
    lines = response.text.splitlines()
    assert lines[0].startswith("index,model_id,submission_id")
    assert "scores.lexical.all.test" in lines[0]
    assert len(lines) == 13
    assert "'=HYPERLINK" in response.text
    etag = response.headers["etag"]
    assert client.get("/leaderboards/slm21/csv", headers={"If-None-Match": etag}).status_code == 304


def test_entry_info_and_lists(board) -> None:
    client, bench = board
    entry = client.get("/leaderboards/slm21/entry/0b02c1f5e9a34d2b")
    assert entry.status_code == 200 and entry.json()["index"] == 1
    missing = client.get("/leaderboards/slm21/entry/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    info = client.get("/leaderboards/slm21/info").json()
    assert info["entries"] == 12 and info["order"] == "descending"
    assert info["sort_key"] == "scores.lexical.all.test"
    listed = client.get("/leaderboards/list").json()["leaderboards"]
    assert [i["label"] for i in listed] == ["slm21"]
    of_bench = client.get(f"/benchmarks/{bench}/leaderboards/list").json()["leaderboards"]
    assert of_bench[0]["label"] == "slm21"
    assert client.get("/benchmarks/test-challenge/leaderboards/list").json() == {"leaderboards": []}
    assert client.get("/benchmarks/nope/leaderboards/list").status_code == 404


def test_every_list_answers_one_object_named_after_its_items(board) -> None:
    """`/leaderboards/list` has the shape of `/benchmarks/list`: {"<items>": [...]}."""
    client, bench = board
    for path, key, item_key in (
        ("/benchmarks/list", "benchmarks", "id"),
        ("/leaderboards/list", "leaderboards", "label"),
        (f"/benchmarks/{bench}/leaderboards/list", "leaderboards", "label"),
    ):
        body = client.get(path).json()
        assert list(body) == [key], path
        assert body[key] and all(item_key in item for item in body[key]), path


def test_unknown_leaderboard_is_json_404(board) -> None:
    client, _ = board
    for path in ("json", "csv", "info", "entry/x"):
        response = client.get(f"/leaderboards/nope/{path}")
        assert response.status_code == 404
        assert response.json() == {"detail": service.NO_LEADERBOARD.format(label="nope")}


def test_every_leaderboard_route_is_documented(board) -> None:
    client, _ = board
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/leaderboards/list",
        "/leaderboards/{label}/info",
        "/leaderboards/{label}/json",
        "/leaderboards/{label}/csv",
        "/leaderboards/{label}/entry/{entry_id}",
        "/benchmarks/{benchmark_id}/leaderboards/list",
        "/submissions/{submission_id}/log",
        "/submissions/{submission_id}/scores",
    ):
        assert "get" in paths[path], path
    assert "304" in paths["/leaderboards/{label}/json"]["get"]["responses"]
    assert client.head("/leaderboards/slm21/json").status_code == 200


def test_stored_entries_breaking_the_rules_never_break_the_public_reads(board, db) -> None:
    client, _ = board
    bad = stored_bad_entries(db)
    store_entries(db, "slm21", bad)
    response = client.get("/leaderboards/slm21/json")
    assert response.status_code == 200
    data = strict_json(response.text)["data"]
    assert len(data) == 12 + len(bad)
    assert {e["submission_id"] for e in data[12:]} == {e["submission_id"] for e in bad}
    for entry in bad:
        one = client.get(f"/leaderboards/slm21/entry/{entry['submission_id']}")
        assert one.status_code == 200
        assert strict_json(one.text)["submission_id"] == entry["submission_id"]
    assert client.get("/leaderboards/slm21/entry/0b02c1f5e9a34d2b").json()["index"] == 1
    csv_response = client.get("/leaderboards/slm21/csv")
    assert csv_response.status_code == 200
    rows = csv_rows(csv_response.text)
    assert len(rows) == 1 + len(data)
    assert risky_cells(rows) == []
