"""A user's quota figures: `quota_usage` and `GET /users/{username}/quota`."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from tests.helpers.factories import bearer, make_benchmark, make_submission, make_user
from zerospeech_api.db.tables import Submission, SubmissionStatus


def _at(db, sid: str, when: dt.datetime) -> None:
    with db.transaction() as session:
        session.execute(update(Submission).where(Submission.id == sid).values(created_at=when))


def test_quota_route_counts_the_window_and_says_when_a_slot_frees(client, db, settings) -> None:
    user = make_user(db, settings)
    limited = make_benchmark(db, "limited", quota="2/1d")
    make_benchmark(db, "free")
    make_benchmark(db, "secret", private=True)  # open, but private and never used: not listed
    make_benchmark(db, "ended", start_date=dt.date(2020, 1, 1), end_date=dt.date(2020, 2, 1))
    now = dt.datetime.now(dt.UTC)
    old = make_submission(db, settings, user, benchmark_id=limited)
    _at(db, old, now - dt.timedelta(hours=30))  # outside the window
    first = make_submission(db, settings, user, benchmark_id=limited)
    _at(db, first, now - dt.timedelta(hours=5))
    for status in (SubmissionStatus.FAILED, SubmissionStatus.INVALID, SubmissionStatus.CANCELLED):
        make_submission(db, settings, user, benchmark_id=limited, status=status)

    answer = client.get(f"/users/{user.username}/quota", headers=bearer(db, settings, user))
    assert answer.status_code == 200
    body = answer.json()
    assert body["username"] == user.username
    by_id = {q["benchmark"]: q for q in body["quotas"]}
    assert set(by_id) >= {"limited", "free"} and not {"secret", "ended"} & set(by_id)
    q = by_id["limited"]
    assert (q["limit"], q["period"], q["used"], q["remaining"]) == (2, "1d", 1, 1)
    frees = dt.datetime.fromisoformat(q["next_slot_at"])
    assert abs(frees - (now + dt.timedelta(hours=19))) < dt.timedelta(seconds=5)
    assert by_id["free"] == {
        "benchmark": "free", "label": "Benchmark free", "limit": None, "period": None,
        "used": 0, "remaining": None, "next_slot_at": None,
    }  # fmt: skip

    # Used up: nothing remaining, and the slot frees when the oldest counted one leaves.
    second = make_submission(db, settings, user, benchmark_id=limited)
    _at(db, second, now - dt.timedelta(hours=1))
    q = {
        q["benchmark"]: q
        for q in client.get(
            f"/users/{user.username}/quota", headers=bearer(db, settings, user)
        ).json()["quotas"]
    }["limited"]
    assert (q["used"], q["remaining"]) == (2, 0)
    assert abs(dt.datetime.fromisoformat(q["next_slot_at"]) - frees) < dt.timedelta(seconds=5)


def test_quota_route_is_for_the_user_and_admins(client, db, settings) -> None:
    user, other = make_user(db, settings), make_user(db, settings)
    admin = make_user(db, settings, admin=True)
    path = f"/users/{user.username}/quota"
    assert client.get(path).status_code == 401
    assert client.get(path, headers=bearer(db, settings, other)).status_code == 403
    assert client.get(path, headers=bearer(db, settings, admin)).status_code == 200
    missing = client.get("/users/nobody/quota", headers=bearer(db, settings, admin))
    assert missing.status_code == 404
