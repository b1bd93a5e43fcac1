"""The worker in-process over a real database: scores evaluator end to end, outcomes, mail."""

from __future__ import annotations

from tests.helpers.builders import make_user
from tests.helpers.evaluation import (
    events_of,
    make_benchmark,
    make_leaderboard,
    make_submission,
    outbox_messages,
    status_of,
    submission_files,
    wait_for,
    zip_bytes,
)
from zerospeech_api.db.tables import LeaderboardEntry
from zerospeech_api.evaluation.worker import Worker


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
