"""The worker in-process over a real database: scores evaluator end to end, outcomes, mail,
a worker that lost its lease, hostile archives, no room on the disk."""

from __future__ import annotations

import datetime as dt
import sys
import threading

import pytest
from sqlalchemy import update

from tests.helpers.factories import (
    events_of,
    make_benchmark,
    make_evaluator,
    make_leaderboard,
    make_submission,
    make_user,
    status_of,
    submission_files,
    zip_bytes,
)
from tests.helpers.outbox import outbox_messages
from tests.helpers.processes import wait_for
from zerospeech_api.db.tables import Job, LeaderboardEntry, Submission, utcnow
from zerospeech_api.evaluation import jobs
from zerospeech_api.evaluation.view import submission_log
from zerospeech_api.evaluation.worker import Worker
from zerospeech_api.leaderboards.results import read_results, results_path
from zerospeech_api.submissions import storage
from zerospeech_api.submissions.archive import NO_SPACE


def run_once(settings, db) -> Worker:
    worker = Worker(settings, db=db)
    worker.run(once=True)
    worker.mailer.close()
    return worker


def test_scores_submission_is_published_stamped(settings, db) -> None:
    user = make_user(db, settings)
    bench = make_benchmark(db)
    make_leaderboard(db, "lb-main", bench)
    sid = make_submission(db, settings, user, benchmark_id=bench, author_label="Lovelace (2021)")
    run_once(settings, db)
    assert status_of(db, sid) == "completed"
    with db.session(read_only=True) as session:
        entry = session.query(LeaderboardEntry).filter_by(submission_id=sid).one().data
    statuses = [e.status for e in events_of(db, sid)]
    assert entry["submission_id"] == sid
    assert entry["submitted_by"] == user.username
    assert entry["publication"]["author_short"] == "Lovelace (2021)"
    assert entry["model_id"].startswith("model-")
    assert [s for s in statuses if s] == ["uploaded", "queued", "evaluating", "completed"][1:]
    mails = wait_for(lambda: outbox_messages(settings), what="mail")
    assert mails[0]["to"] == user.email
    assert "completed" in mails[0]["subject"]
    assert f"http://testserver/submissions/{sid}/log" in mails[0]["body"]


def test_missing_entry_is_invalid(settings, db) -> None:
    user = make_user(db, settings)
    bench = make_benchmark(db)
    sid = make_submission(
        db, settings, user, benchmark_id=bench, archive=zip_bytes(submission_files(None))
    )
    run_once(settings, db)
    assert status_of(db, sid) == "invalid"


# Waits at a gate named after its run number (1 = first start), then writes {"scores": {"v": n}}.
GATED = """
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "runs.txt"), "a") as f:
    f.write("start\\n")
run = open(os.path.join(here, "runs.txt")).read().count("start")
while not os.path.exists(os.path.join(here, f"gate-{run}")):
    time.sleep(0.05)
json.dump({"scores": {"v": run}}, open(sys.argv[2], "w"))
"""


def test_a_worker_that_lost_its_lease_touches_nothing_of_the_new_attempt(
    settings, db, tmp_path
) -> None:
    evaluator = tmp_path / "gated.py"
    evaluator.write_text(GATED)
    runs = tmp_path / "runs.txt"
    make_evaluator(db, "gated", f"{sys.executable} {evaluator} {{input}} {{output}}")
    bench = make_benchmark(db, evaluator="gated")
    make_leaderboard(db, "board", bench, sort_key="scores.v")
    user = make_user(db, settings)
    sid = make_submission(db, settings, user, benchmark_id=bench, has_scores=False)
    jobs.promote_uploaded(db=db, max_attempts=3)
    stalled, fresh = Worker(settings, db=db), Worker(settings, db=db)
    first = jobs.claim(db=db, owner=stalled.identity, lease_seconds=60)
    thread_a = threading.Thread(target=stalled.run_job, args=(first,))
    thread_a.start()
    wait_for(lambda: runs.exists() and runs.read_text().count("start") == 1, what="first run")
    # Worker A stalls past its lease (its heartbeat renews every 20 s, so it has not noticed):
    # the lease ends, another worker re-queues the job and claims it.
    with db.transaction() as session:
        session.execute(update(Job).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1)))
    assert jobs.requeue_expired(db=db) == [(sid, "queued")]
    second = jobs.claim(db=db, owner=fresh.identity, lease_seconds=60)
    thread_b = threading.Thread(target=fresh.run_job, args=(second,))
    thread_b.start()
    wait_for(lambda: runs.read_text().count("start") == 2, what="second run")
    (tmp_path / "gate-1").touch()  # A wakes up and its evaluation ends first
    thread_a.join(60)
    old = storage.attempt_dir(settings, sid, first.job_id, first.claim)
    new = storage.attempt_dir(settings, sid, second.job_id, second.claim)
    assert old != new
    assert (new / "unpacked").is_dir() and (new / "evaluation.log").is_file()
    assert not results_path(settings, sid).exists()
    assert status_of(db, sid) == "evaluating"
    assert {p.name for p in old.iterdir()} <= {"evaluation.log"}  # no results, no scratch
    (tmp_path / "gate-2").touch()
    thread_b.join(60)
    assert status_of(db, sid) == "completed"
    assert read_results(results_path(settings, sid))[""]["scores"] == {"v": 2}
    with db.session(read_only=True) as session:
        (entry,) = session.query(LeaderboardEntry).filter_by(submission_id=sid).all()
        assert entry.data["scores"] == {"v": 2}
        (job,) = session.query(Job).all()
        assert job.state == "done" and job.claims == 2
        shown = submission_log(
            session=session,
            settings=settings,
            submission=session.get(Submission, sid),
            tail_bytes=100_000,
        )
    assert f"by worker {fresh.identity}" in shown["log"]
    assert stalled.identity not in shown["log"]
    assert [e.status for e in events_of(db, sid) if e.status].count("completed") == 1
    assert not (new / "unpacked").exists()  # B removed its own scratch when done
    for worker in (stalled, fresh):
        worker.mailer.close()


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"a" * 300 + ".txt": "x"}, "path too long"),
        ({"/".join(["d"] * 100) + "/x.txt": "x"}, "nested too deep"),
        ({"scores": "a file", "scores/leaderboard.json": "{}"}, "cannot be created"),
        ({"scores/leaderboard.json": '{"scores": {"x": 1'}, "not valid JSON"),
        ({"scores/leaderboard.json": '{"scores": ' + "[" * 100_000 + "]" * 100_000 + "}"}, ""),
    ],
    ids=["overlong-name", "deep-path", "file-and-folder", "bad-json", "deep-json"],
)
def test_a_hostile_archive_or_entry_is_invalid_with_its_reason(settings, db, files, reason) -> None:
    user = make_user(db, settings)
    sid = make_submission(
        db, settings, user, benchmark_id=make_benchmark(db), archive=zip_bytes(files)
    )
    run_once(settings, db)
    assert status_of(db, sid) == "invalid"
    last = events_of(db, sid)[-1]
    assert last.status == "invalid" and reason in last.message and len(last.message) > 20


def test_no_room_to_unpack_is_a_platform_fault_and_keeps_the_archive(settings, db) -> None:
    user = make_user(db, settings)
    archive = zip_bytes({"zeros.bin": b"\0" * 50_000_000})
    sid = make_submission(db, settings, user, benchmark_id=make_benchmark(db), archive=archive)
    # Leave the worker ~2 MB of room on the data disk: the 50 MB archive cannot be unpacked.
    reserve = storage.free_bytes(settings) - 2_000_000
    run_once(settings.model_copy(update={"unpack_reserve_bytes": reserve}), db)
    assert status_of(db, sid) == "failed"
    last = events_of(db, sid)[-1]
    assert NO_SPACE in last.message and "not of the submission" in last.message
    assert storage.archive_path(settings, sid).read_bytes() == archive
    assert not list(storage.submission_dir(settings, sid).rglob("unpacked*"))
