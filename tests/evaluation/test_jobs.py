"""The job queue on SQLite and PostgreSQL: atomic claims, leases, requeue, attempts, release."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from tests.helpers.factories import events_of, make_benchmark, make_submission, make_user, status_of
from tests.helpers.processes import at_once
from zerospeech_api.db.tables import Job, JobState, SubmissionStatus
from zerospeech_api.errors import Conflict
from zerospeech_api.evaluation import jobs


@pytest.fixture
def uploaded(settings, db):
    """A factory of uploaded submissions on an auto-evaluating benchmark."""
    user = make_user(db, settings)
    bench = make_benchmark(db)

    def factory(n: int = 1, **kwargs) -> list[str]:
        return [
            make_submission(db, settings, user, benchmark_id=kwargs.get("bench", bench))
            for _ in range(n)
        ]

    return factory


def job_rows(db) -> list[Job]:
    with db.session(read_only=True) as session:
        return list(session.query(Job).order_by(Job.id))


def test_enqueue_sets_queued_and_refuses_a_second_active_job(db, uploaded) -> None:
    (sid,) = uploaded()
    with db.transaction() as session:
        jobs.enqueue(session=session, submission_id=sid, max_attempts=3, reason="admin")
    assert status_of(db, sid) == "queued"
    with pytest.raises(Conflict), db.transaction() as session:
        jobs.enqueue(session=session, submission_id=sid, max_attempts=3, reason="again")


def test_promote_only_auto_eval_benchmarks_and_is_idempotent(db, uploaded) -> None:
    manual = make_benchmark(db, auto_eval=False)
    auto = uploaded(2)
    (waiting,) = uploaded(1, bench=manual)
    assert sorted(jobs.promote_uploaded(db=db, max_attempts=3)) == sorted(auto)
    assert jobs.promote_uploaded(db=db, max_attempts=3) == []
    assert status_of(db, waiting) == "uploaded"
    assert len(job_rows(db)) == 2


def test_concurrent_promotion_makes_one_job_per_submission(db, uploaded) -> None:
    ids = uploaded(6)
    at_once(lambda: jobs.promote_uploaded(db=db, max_attempts=3), 4)
    assert Counter(j.submission_id for j in job_rows(db)) == Counter(ids)


def test_concurrent_claims_never_take_the_same_job(db, uploaded) -> None:
    uploaded(12)
    jobs.promote_uploaded(db=db, max_attempts=3)

    def claimer() -> list[jobs.Claimed]:
        owner, taken = f"w{threading.get_ident()}", []
        while (job := jobs.claim(db=db, owner=owner, lease_seconds=60)) is not None:
            taken.append(job)
        return taken

    claimed = [job for taken in at_once(claimer, 4) for job in taken]
    assert len(claimed) == 12
    assert len({c.job_id for c in claimed}) == 12
    assert all(j.state == JobState.RUNNING and j.attempts == 1 for j in job_rows(db))


def test_expired_lease_is_requeued_and_the_old_owner_can_no_longer_write(db, uploaded) -> None:
    (sid,) = uploaded()
    jobs.promote_uploaded(db=db, max_attempts=3)
    first = jobs.claim(db=db, owner="dead", lease_seconds=-1)
    assert status_of(db, sid) == "evaluating"
    assert jobs.requeue_expired(db=db) == [(sid, SubmissionStatus.QUEUED)]
    assert status_of(db, sid) == "queued"
    second = jobs.claim(db=db, owner="alive", lease_seconds=60)
    assert second is not None and second.job_id == first.job_id and second.attempt == 2
    assert not jobs.renew(db=db, job_id=first.job_id, owner="dead", lease_seconds=60)
    assert jobs.renew(db=db, job_id=second.job_id, owner="alive", lease_seconds=60)
    with db.transaction() as session:
        assert (
            jobs.finish(
                session=session,
                job_id=first.job_id,
                owner="dead",
                status=SubmissionStatus.COMPLETED,
                reason="late",
                exit_code=0,
                duration=1,
            )
            is None
        )
        assert (
            jobs.finish(
                session=session,
                job_id=second.job_id,
                owner="alive",
                status=SubmissionStatus.COMPLETED,
                reason="done",
                exit_code=0,
                duration=1,
            )
            is not None
        )
    assert status_of(db, sid) == "completed"
    assert [j.state for j in job_rows(db)] == [JobState.DONE]


def test_after_max_attempts_the_job_and_submission_fail_with_a_reason(db, uploaded) -> None:
    (sid,) = uploaded()
    jobs.promote_uploaded(db=db, max_attempts=2)
    for _ in range(2):
        assert jobs.claim(db=db, owner="crashy", lease_seconds=-1) is not None
        jobs.requeue_expired(db=db)
    assert status_of(db, sid) == "failed"
    (job,) = job_rows(db)
    assert job.state == JobState.FAILED and job.attempts == 2
    assert job.last_error == jobs.TOO_MANY_ATTEMPTS.format(n=2)
    last = events_of(db, sid)[-1]
    assert last.status == "failed" and "2 attempts" in last.message


def test_release_requeues_without_counting_an_attempt(db, uploaded) -> None:
    (sid,) = uploaded()
    jobs.promote_uploaded(db=db, max_attempts=3)
    claimed = jobs.claim(db=db, owner="w", lease_seconds=60)
    assert jobs.release(db=db, job_id=claimed.job_id, owner="w", reason="stopping")
    (job,) = job_rows(db)
    assert job.state == JobState.QUEUED and job.attempts == 0
    assert status_of(db, sid) == "queued"
    assert not jobs.release(db=db, job_id=claimed.job_id, owner="w", reason="twice")


def test_a_queued_job_of_a_cancelled_submission_is_dropped(db, uploaded) -> None:
    from zerospeech_api.db.tables import Submission
    from zerospeech_api.submissions.events import set_status

    (sid,) = uploaded()
    jobs.promote_uploaded(db=db, max_attempts=3)
    with db.transaction() as session:
        set_status(
            session=session,
            submission=session.get(Submission, sid),
            status=SubmissionStatus.CANCELLED,
            reason="owner deleted it",
        )
    assert jobs.claim(db=db, owner="w", lease_seconds=60) is None
    (job,) = job_rows(db)
    assert job.state == JobState.FAILED and "cancelled" in job.last_error


def test_pending_tells_an_idle_worker_there_is_nothing_to_do(db, uploaded) -> None:
    assert jobs.pending(db=db) == jobs.Pending(uploaded=False, expired=False, queued=False)
    uploaded()
    assert jobs.pending(db=db).uploaded
    jobs.promote_uploaded(db=db, max_attempts=3)
    assert jobs.pending(db=db) == jobs.Pending(uploaded=False, expired=False, queued=True)
    jobs.claim(db=db, owner="w", lease_seconds=-1)
    assert jobs.pending(db=db) == jobs.Pending(uploaded=False, expired=True, queued=False)
