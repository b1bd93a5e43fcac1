"""The participant's side of the queue: positions, estimated start, and cancel (service and
`POST /submissions/{id}/cancel`), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from tests.helpers.factories import (
    bearer,
    events_of,
    make_benchmark,
    make_submission,
    make_user,
    status_of,
)
from zerospeech_api.benchmarks.service import quota_usage
from zerospeech_api.db.tables import Benchmark, Job, JobState, Submission, SubmissionStatus, User
from zerospeech_api.errors import Conflict
from zerospeech_api.evaluation import jobs, queue


@pytest.fixture
def queued(settings, db):
    """A factory of queued submissions of one user (each with a queued job)."""
    user = make_user(db, settings)
    bench = make_benchmark(db, quota="5/1d")

    def factory(n: int = 1) -> list[str]:
        ids = []
        for _ in range(n):
            sid = make_submission(db, settings, user, benchmark_id=bench)
            with db.transaction() as session:
                jobs.enqueue(session=session, submission_id=sid, max_attempts=3, reason="test")
            ids.append(sid)
        return ids

    factory.user = user  # type: ignore[attr-defined]
    factory.bench = bench  # type: ignore[attr-defined]
    return factory


def _cancel(db, sid: str, username: str) -> bool:
    with db.transaction() as session:
        by = session.scalar(select(User).where(User.username == username))
        return queue.cancel_submission(
            session=session, submission=session.get(Submission, sid), by=by
        )


def _job_states(db, sid: str) -> list[str]:
    with db.session(read_only=True) as session:
        return list(session.scalars(select(Job.state).where(Job.submission_id == sid)))


def test_positions_follow_claim_order_and_estimates_use_recent_durations(db, queued) -> None:
    first, second, third = queued(3)
    with db.session(read_only=True) as session:
        spots = queue.queue_spots(session=session, submission_ids=[first, third])
    # No evaluation has finished yet: positions, but nothing to estimate from.
    assert {k: v.position for k, v in spots.items()} == {first: 1, third: 3}
    assert spots[first].estimated_start is None

    # One worker is busy with `first` for 60 s already; evaluations take 100 s on average.
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    with db.transaction() as session:
        session.add(
            Job(submission_id=second, state=JobState.DONE, duration_seconds=100.0,
                finished_at=now - dt.timedelta(hours=1))
        )  # fmt: skip
        session.execute(
            update(Job)
            .where(Job.submission_id == first, Job.state == JobState.QUEUED)
            .values(state=JobState.RUNNING, started_at=now - dt.timedelta(seconds=60))
        )
    with db.session(read_only=True) as session:
        spots = queue.queue_spots(session=session, submission_ids=[second, third], now=now)
    assert spots[second].position == 1 and spots[third].position == 2
    assert spots[second].estimated_start == now + dt.timedelta(seconds=40)
    assert spots[third].estimated_start == now + dt.timedelta(seconds=140)


def test_cancelling_a_queued_submission_drops_its_job(db, queued, settings) -> None:
    (sid,) = queued()
    assert _cancel(db, sid, queued.user.username) is False
    assert status_of(db, sid) == SubmissionStatus.CANCELLED
    assert _job_states(db, sid) == [JobState.CANCELLED]
    assert "cancelled by its owner" in events_of(db, sid)[-1].message
    assert jobs.claim(db=db, owner="w1", lease_seconds=60) is None  # nothing left to claim
    # A cancelled submission does not use the quota.
    with db.session(read_only=True) as session:
        usage = quota_usage(
            session=session,
            benchmark=session.get(Benchmark, queued.bench),
            user=session.get(User, queued.user.id),
            now=dt.datetime.now(dt.UTC),
        )
    assert (usage.used, usage.remaining, usage.next_slot_at) == (0, 5, None)


def test_cancelling_an_evaluation_makes_its_worker_lose_the_job(db, queued) -> None:
    (sid,) = queued()
    claimed = jobs.claim(db=db, owner="w1", lease_seconds=60)
    assert claimed is not None and status_of(db, sid) == SubmissionStatus.EVALUATING
    assert _cancel(db, sid, queued.user.username) is True
    assert "the running evaluation was stopped" in events_of(db, sid)[-1].message
    # The worker's next renewal fails, and so would its final write: it stops, writes nothing.
    assert jobs.renew(db=db, job_id=claimed.job_id, owner="w1", lease_seconds=60) is False
    with db.transaction() as session:
        finished = jobs.finish(
            session=session, job_id=claimed.job_id, owner="w1",
            status=SubmissionStatus.COMPLETED, reason="done", exit_code=0, duration=1.0,
        )  # fmt: skip
    assert finished is None
    assert status_of(db, sid) == SubmissionStatus.CANCELLED
    assert jobs.requeue_expired(db=db) == []


@pytest.mark.parametrize("status", ["uploading", "completed", "failed", "cancelled"])
def test_only_uploaded_queued_or_evaluating_submissions_can_be_cancelled(
    db, settings, status
) -> None:
    user = make_user(db, settings)
    sid = make_submission(
        db, settings, user, benchmark_id=make_benchmark(db), status=SubmissionStatus(status)
    )
    with pytest.raises(Conflict, match="cannot be cancelled"):
        _cancel(db, sid, user.username)
    assert status_of(db, sid) == status


def test_cancel_route_for_the_owner_and_admins_only(client, db, settings, queued) -> None:
    mine, other = queued(2)
    stranger = make_user(db, settings)
    admin = make_user(db, settings, admin=True)
    assert client.post(f"/submissions/{mine}/cancel").status_code == 401
    refused = client.post(f"/submissions/{mine}/cancel", headers=bearer(db, settings, stranger))
    assert refused.status_code == 403 and status_of(db, mine) == SubmissionStatus.QUEUED
    owner = bearer(db, settings, queued.user)
    done = client.post(f"/submissions/{mine}/cancel", headers=owner)
    assert done.status_code == 200
    assert done.json() == {
        "submission_id": mine, "status": "cancelled", "evaluation_stopped": False
    }  # fmt: skip
    again = client.post(f"/submissions/{mine}/cancel", headers=owner)
    assert again.status_code == 409 and "cannot be cancelled" in again.json()["detail"]
    by_admin = client.post(f"/submissions/{other}/cancel", headers=bearer(db, settings, admin))
    assert by_admin.status_code == 200
    assert "cancelled by an administrator" in events_of(db, other)[-1].message
    assert client.post("/submissions/nope/cancel", headers=owner).status_code == 404
