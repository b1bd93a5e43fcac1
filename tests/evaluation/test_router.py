"""The participant's view: /submissions/{id}/log (owner, admin) and /submissions/{id}/scores."""

from __future__ import annotations

import pytest

from tests.helpers.factories import (
    bearer,
    make_benchmark,
    make_leaderboard,
    make_submission,
    make_user,
)
from zerospeech_api.evaluation.worker import Worker
from zerospeech_api.submissions.service import NOT_YOURS


@pytest.fixture
def evaluated(settings, db):
    """An evaluated public submission, a private (test-challenge) one, and three users."""
    owner = make_user(db, settings)
    other = make_user(db, settings)
    admin = make_user(db, settings, admin=True)
    bench = make_benchmark(db)
    make_leaderboard(db, "main", bench)
    public = make_submission(db, settings, owner, benchmark_id=bench)
    private = make_submission(db, settings, owner, benchmark_id="test-challenge")
    worker = Worker(settings, db=db)
    worker.run(once=True)
    worker.mailer.close()
    return {
        "public": public,
        "private": private,
        "owner": bearer(db, settings, owner),
        "other": bearer(db, settings, other),
        "admin": bearer(db, settings, admin),
    }


def test_log_shows_timed_status_changes_and_the_evaluation_log(client, evaluated) -> None:
    sid = evaluated["public"]
    response = client.get(f"/submissions/{sid}/log", headers=evaluated["owner"])
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert [e["status"] for e in body["events"] if e["status"]] == [
        "queued",
        "evaluating",
        "completed",
    ]
    assert all(e["at"].endswith("+00:00") for e in body["events"])
    assert "scores/leaderboard.json: valid entry" in body["log"]
    assert any("published on leaderboard(s) main" in e["message"] for e in body["events"])
    tail = client.get(f"/submissions/{sid}/log?tail_bytes=10", headers=evaluated["owner"]).json()
    assert len(tail["log"]) <= 10 and tail["log_truncated"]
    assert client.get(f"/submissions/{sid}/log", headers=evaluated["admin"]).status_code == 200


def test_log_is_private(client, evaluated) -> None:
    sid = evaluated["public"]
    assert client.get(f"/submissions/{sid}/log").status_code == 401
    other = client.get(f"/submissions/{sid}/log", headers=evaluated["other"])
    assert other.status_code == 403 and other.json() == {"detail": NOT_YOURS}
    missing = client.get("/submissions/nope/log", headers=evaluated["owner"])
    assert missing.status_code == 404
    bad = client.get(f"/submissions/{sid}/log?tail_bytes=-1", headers=evaluated["owner"])
    assert bad.status_code == 400 and "tail_bytes" in bad.json()["detail"]


def test_scores_are_public_once_on_a_public_leaderboard(client, evaluated) -> None:
    sid = evaluated["public"]
    body = client.get(f"/submissions/{sid}/scores").json()
    assert body["leaderboards"] == ["main"]
    assert body["entry"]["submission_id"] == sid
    assert "lexical" in body["entry"]["scores"]


def test_private_benchmark_scores_stay_with_owner_and_admin(client, evaluated) -> None:
    sid = evaluated["private"]
    owner = client.get(f"/submissions/{sid}/scores", headers=evaluated["owner"])
    assert owner.status_code == 200 and owner.json()["leaderboards"] == []
    assert client.get(f"/submissions/{sid}/scores", headers=evaluated["admin"]).status_code == 200
    assert client.get(f"/submissions/{sid}/scores").status_code == 401
    assert client.get(f"/submissions/{sid}/scores", headers=evaluated["other"]).status_code == 403
    listed = client.get("/leaderboards/list").json()["leaderboards"]
    assert all(lb["benchmark_id"] != "test-challenge" for lb in listed)
