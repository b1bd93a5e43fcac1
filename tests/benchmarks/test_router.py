"""`/benchmarks/list` and `/benchmarks/{id}/info` as the zrc client reads them."""

from __future__ import annotations

import datetime as dt

from fastapi.testclient import TestClient

from tests.helpers.factories import make_benchmark
from zerospeech_api.benchmarks.service import NO_BENCHMARK
from zerospeech_api.db.engine import Database

CONTRACT_KEYS = {"label", "start_date", "end_date", "active", "url", "evaluator", "auto_eval"}


def test_info_has_the_contract_shape(client: TestClient, db: Database) -> None:
    make_benchmark(db, "sLM21", end_date=dt.date(2099, 12, 31), quota="3/1d", auto_eval=False)
    info = client.get("/benchmarks/sLM21/info")
    assert info.status_code == 200
    data = info.json()
    assert CONTRACT_KEYS <= data.keys()
    assert data["start_date"] == dt.datetime.now(dt.UTC).date().isoformat()
    assert data["end_date"] == "2099-12-31"
    assert data["active"] is True and data["auto_eval"] is False
    assert isinstance(data["evaluator"], int)
    assert data["quota"] == "3/1d" and data["is_open"] is True


def test_test_challenge_exists_with_no_end(client: TestClient) -> None:
    data = client.get("/benchmarks/test-challenge/info").json()
    assert data["active"] is True and data["end_date"] is None and data["private"] is True


def test_unknown_benchmark_is_a_json_404(client: TestClient) -> None:
    response = client.get("/benchmarks/nope/info")
    assert response.status_code == 404
    assert response.json() == {"detail": NO_BENCHMARK.format(id="nope")}


def test_list_shows_public_benchmarks(client: TestClient, db: Database) -> None:
    make_benchmark(db, "abxLS")
    make_benchmark(db, "hidden", private=True)
    listed = client.get("/benchmarks/list")
    assert listed.status_code == 200
    ids = [b["id"] for b in listed.json()["benchmarks"]]
    assert ids == ["abxLS"]
    assert client.get("/benchmarks/hidden/info").status_code == 200  # reachable by id
