"""`zerospeech-api queue`: the queue, the workers and the stuck states, as tables and JSON."""

from __future__ import annotations

import json

from sqlalchemy import update

from tests.helpers.factories import (
    HOUR,
    add_job,
    add_running_job,
    add_worker,
    age,
    make_benchmark,
    make_submission,
    make_user,
)
from zerospeech_api.db.tables import Job, WorkerHeartbeat, utcnow


def test_queue_shows_waiting_running_workers_and_problems(run_cli, settings, db) -> None:
    user = make_user(db, settings)
    bench = make_benchmark(db, "sLM21")
    running = make_submission(db, settings, user, benchmark_id=bench, status="evaluating")
    queued = make_submission(db, settings, user, benchmark_id=bench, status="queued")
    never_queued = make_submission(db, settings, user, benchmark_id=bench)
    age(db, never_queued, HOUR)
    now = utcnow()
    job = add_running_job(
        db,
        running,
        owner="gpu-1:77:aa",
        lease_left=HOUR,
        running_for=HOUR,
        attempts=2,
        now=now,
    )
    add_job(db, queued, created_at=now - 2 * HOUR)
    # A dead worker whose host name holds a terminal escape: printed escaped.
    add_worker(db, "gpu-1:77:aa", seen=now - HOUR, node="gpu-1", pid=77, job_id=job)
    add_worker(db, "evil:1:bb", seen=now - HOUR, node="evil\x1b[31m", pid=1)

    result = run_cli("queue")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "queue: 1 evaluating, 2 waiting" in out
    lines = out.splitlines()
    row = next(line for line in lines if line.startswith(running))
    assert row.split()[1:6] == ["evaluating", "sLM21", "1h00m", "2/3", "gpu-1:77:aa"]
    assert next(line for line in lines if line.startswith(queued)).split()[1:4] == [
        "queued",
        "sLM21",
        "2h00m",
    ]
    assert "workers: 0 alive" in out and "evil\\x1b[31m" in out and "\x1b" not in out
    assert f"- [not-queued] submission {never_queued}" in out
    assert f"  fix: zerospeech-api submissions evaluate {never_queued}" in out
    assert "- [no-worker] 2 submission(s) wait for evaluation" in out
    assert "(the watchdog fixes this)" in out


def test_queue_json(run_cli, settings, db) -> None:
    empty = json.loads(run_cli("queue", "--json").output)
    assert (empty["queue"], empty["workers"], empty["problems"]) == ([], [], [])

    user = make_user(db, settings)
    sid = make_submission(
        db, settings, user, benchmark_id=make_benchmark(db, "abx"), status="queued"
    )
    job = add_job(db, sid)
    add_worker(db, "w:1:aa", seen=utcnow(), node="n1", pid=5)
    data = json.loads(run_cli("queue", "--json").output)
    [item] = data["queue"]
    assert item["submission_id"] == sid and item["job_id"] == job
    assert (item["status"], item["benchmark"], item["attempts"]) == ("queued", "abx", 0)
    assert item["age_seconds"] >= 0 and item["since"].endswith("+00:00")
    [worker] = data["workers"]
    assert (worker["id"], worker["node"], worker["pid"], worker["alive"]) == (
        "w:1:aa",
        "n1",
        5,
        True,
    )
    assert data["problems"] == []

    with db.transaction() as session:
        session.execute(update(WorkerHeartbeat).values(last_seen_at=utcnow() - HOUR))
        session.execute(update(Job).values(created_at=utcnow() - HOUR))
    [problem] = json.loads(run_cli("queue", "--json").output)["problems"]
    assert problem["key"] == problem["kind"] == "no-worker"
    assert problem["fixable"] is False
    assert "zerospeech-api worker" in problem["command"]
    assert "last heard: worker w:1:aa on n1" in problem["reason"]
