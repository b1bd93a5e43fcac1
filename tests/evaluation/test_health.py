"""Queue health over a real database: every stuck state with its key, reason and fixing
command, what is not stuck, the heartbeat row, and the queue report."""

from __future__ import annotations

import datetime as dt
import sys

from sqlalchemy import update

from tests.helpers.factories import (
    HOUR,
    add_job,
    add_running_job,
    add_worker,
    age,
    make_benchmark,
    make_evaluator,
    make_received_upload,
    make_submission,
    make_user,
)
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import (
    Benchmark,
    JobState,
    SubmissionPart,
    SubmissionStatus,
    WorkerHeartbeat,
    utcnow,
)
from zerospeech_api.evaluation import health
from zerospeech_api.evaluation.heartbeat import Heartbeat
from zerospeech_api.settings import Settings

SEC = dt.timedelta(seconds=1)


def problems(db: Database, settings: Settings) -> dict[str, health.Problem]:
    with db.session(read_only=True) as session:
        found = health.find_problems(session=session, settings=settings)
    assert len({p.key for p in found}) == len(found), "keys must be unique"
    return {p.key: p for p in found}


def test_a_healthy_queue_has_no_problem(settings: Settings, db: Database) -> None:
    user = make_user(db, settings)
    bench = make_benchmark(db)
    make_submission(db, settings, user, benchmark_id=bench)  # just uploaded: queued soon
    queued = make_submission(db, settings, user, benchmark_id=bench, status="queued")
    add_job(db, queued)
    add_worker(db, "host:1:aa", seen=utcnow())
    assert problems(db, settings) == {}


def test_uploaded_but_never_queued_on_auto_evaluating_benchmarks_only(
    settings: Settings, db: Database
) -> None:
    user = make_user(db, settings)
    auto = make_benchmark(db)
    manual = make_benchmark(db, auto_eval=False)
    stuck = make_submission(db, settings, user, benchmark_id=auto)
    waits_for_admin = make_submission(db, settings, user, benchmark_id=manual)
    for sid in (stuck, waits_for_admin):
        age(db, sid, HOUR)
    add_worker(db, "host:1:aa", seen=utcnow())
    found = problems(db, settings)
    assert list(found) == [f"{health.NOT_QUEUED}:{stuck}"]
    problem = found[f"{health.NOT_QUEUED}:{stuck}"]
    assert problem.kind == health.NOT_QUEUED and problem.fixable
    assert problem.command == f"zerospeech-api submissions evaluate {stuck}"
    assert "never queued" in problem.reason and auto in problem.reason


def test_fully_received_but_never_joined(settings: Settings, db: Database) -> None:
    user = make_user(db, settings)
    bench = make_benchmark(db)
    long_ago = utcnow() - dt.timedelta(seconds=3 * settings.upload_recovery_seconds)
    stuck = make_received_upload(
        db, settings, user, benchmark_id=bench, parts=[b"a" * 10, b"b" * 5], received_at=long_ago
    )
    just_now = make_received_upload(
        db, settings, user, benchmark_id=bench, parts=[b"c"], received_at=utcnow()
    )
    incomplete = make_received_upload(
        db, settings, user, benchmark_id=bench, parts=[b"d", b"e"], received_at=long_ago
    )
    with db.transaction() as session:
        session.execute(
            update(SubmissionPart)
            .where(SubmissionPart.submission_id == incomplete, SubmissionPart.position == 1)
            .values(received_at=None)
        )
    found = problems(db, settings)
    assert list(found) == [f"{health.NOT_JOINED}:{stuck}"]
    problem = found[f"{health.NOT_JOINED}:{stuck}"]
    assert problem.command == f"zerospeech-api submissions rejoin {stuck}"
    assert "all 2 part(s) received" in problem.reason and problem.fixable
    assert f"{health.NOT_JOINED}:{just_now}" not in found  # its join may still be running


def test_a_dead_workers_job_is_reported_for_requeue(settings: Settings, db: Database) -> None:
    user = make_user(db, settings)
    bench = make_benchmark(db)
    sid = make_submission(db, settings, user, benchmark_id=bench, status="evaluating")
    now = utcnow()
    job = add_running_job(
        db,
        sid,
        owner="deadhost:9:ff",
        lease_left=-HOUR,
        running_for=2 * HOUR,
        attempts=1,
        now=now,
    )
    add_worker(db, "host:1:aa", seen=now)
    found = problems(db, settings)
    assert list(found) == [f"{health.LEASE_EXPIRED}:{sid}:{job}"]
    assert "deadhost:9:ff" in found[f"{health.LEASE_EXPIRED}:{sid}:{job}"].reason


def test_evaluating_past_its_time_limit_names_the_worker_to_stop(
    make_settings, migrated_database_url: str, db: Database
) -> None:
    settings = make_settings(database_url=migrated_database_url, evaluation_overdue_seconds=10)
    user = make_user(db, settings)
    make_evaluator(db, "slow", f"{sys.executable} -c pass", timeout=5)
    bench = make_benchmark(db, evaluator="slow")
    overdue = make_submission(db, settings, user, benchmark_id=bench, status="evaluating")
    on_time = make_submission(db, settings, user, benchmark_id=bench, status="evaluating")
    now = utcnow()
    running = {"state": JobState.RUNNING, "lease_expires_at": now + HOUR, "claims": 1}
    job = add_job(db, overdue, lease_owner="gpu-7:4242:ab", started_at=now - 60 * SEC, **running)
    add_job(db, on_time, lease_owner="gpu-7:4343:cd", started_at=now - 10 * SEC, **running)
    add_worker(db, "gpu-7:4242:ab", seen=now, node="gpu-7", pid=4242, job_id=job)
    found = problems(db, settings)
    key = f"{health.OVERDUE}:{overdue}:{job}:1"
    assert list(found) == [key]
    assert found[key].command.startswith("on gpu-7: `kill 4242`")
    assert "past its time limit of 5 s" in found[key].reason and not found[key].fixable


def test_a_slurm_evaluation_waiting_in_the_cluster_queue_is_not_overdue(
    make_settings, migrated_database_url: str, db: Database
) -> None:
    settings = make_settings(database_url=migrated_database_url, evaluation_overdue_seconds=10)
    user = make_user(db, settings)
    make_evaluator(db, "slow", f"{sys.executable} -c pass", timeout=5)
    bench = make_benchmark(db, evaluator="slow")
    pending = make_submission(db, settings, user, benchmark_id=bench, status="evaluating")
    now = utcnow()
    add_worker(db, "login-1:4242:ab", seen=now, node="login-1", pid=4242)
    add_job(
        db,
        pending,
        state=JobState.RUNNING,
        lease_owner="login-1:4242:ab",
        lease_expires_at=now + HOUR,
        started_at=now - HOUR,
        claims=1,
        slurm_active=True,
        slurm_job_id="1234",
        slurm_claim=1,
    )
    assert problems(db, settings) == {}


def test_queued_while_no_worker_is_alive(settings: Settings, db: Database) -> None:
    user = make_user(db, settings)
    bench = make_benchmark(db)
    sid = make_submission(db, settings, user, benchmark_id=bench, status="queued")
    add_job(db, sid, created_at=utcnow() - HOUR)
    found = problems(db, settings)
    assert list(found) == [health.NO_WORKER]
    assert "no worker has ever reported" in found[health.NO_WORKER].reason
    assert "zerospeech-api worker" in found[health.NO_WORKER].command
    silent = utcnow() - dt.timedelta(seconds=4 * settings.worker_heartbeat_seconds)
    add_worker(db, "old:1:aa", seen=silent, node="old-node")
    assert (
        "last heard: worker old:1:aa on old-node" in problems(db, settings)[health.NO_WORKER].reason
    )
    add_worker(db, "new:2:bb", seen=utcnow())
    assert problems(db, settings) == {}


def test_a_benchmark_whose_evaluator_is_missing(settings: Settings, db: Database) -> None:
    make_evaluator(db, "gone", "/nonexistent/abx/run {input} {output}")
    make_evaluator(db, "unknown", "zr-no-such-program-here {input}")
    make_evaluator(db, "present", f"{sys.executable} -c pass")
    gone = make_benchmark(db, evaluator="gone")
    unknown = make_benchmark(db, evaluator="unknown")
    make_benchmark(db, evaluator="present")
    retired = make_benchmark(db, evaluator="gone")
    with db.transaction() as session:
        session.execute(update(Benchmark).where(Benchmark.id == retired).values(active=False))
    found = problems(db, settings)
    assert set(found) == {
        f"{health.EVALUATOR_MISSING}:{gone}",
        f"{health.EVALUATOR_MISSING}:{unknown}",
    }
    assert (
        "/nonexistent/abx/run does not exist" in found[f"{health.EVALUATOR_MISSING}:{gone}"].reason
    )
    assert (
        "zerospeech-api evaluators show gone" in found[f"{health.EVALUATOR_MISSING}:{gone}"].command
    )
    # A retired benchmark counts again as soon as something waits for its evaluator.
    user = make_user(db, settings)
    add_job(db, make_submission(db, settings, user, benchmark_id=retired, status="queued"))
    add_worker(db, "host:1:aa", seen=utcnow())
    assert f"{health.EVALUATOR_MISSING}:{retired}" in problems(db, settings)


def test_a_slurm_evaluator_needs_sbatch_here_not_its_program(
    settings: Settings, db: Database, tmp_path, monkeypatch
) -> None:
    from zerospeech_api.evaluation.registry import create_evaluator

    with db.transaction() as session:
        create_evaluator(
            session=session, name="abx-gpu", command="/cluster/only/abx {input}", runner="slurm"
        )
    bench = make_benchmark(db, evaluator="abx-gpu")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on this host
    found = problems(db, settings)
    assert "`sbatch`" in found[f"{health.EVALUATOR_MISSING}:{bench}"].reason
    sbatch = tmp_path / "sbatch"
    sbatch.write_text("#!/bin/sh\n")
    sbatch.chmod(0o755)
    assert problems(db, settings) == {}  # the program lives on the compute nodes


def test_heartbeat_row_lives_with_the_worker(settings: Settings, db: Database) -> None:
    user = make_user(db, settings)
    sid = make_submission(db, settings, user, benchmark_id=make_benchmark(db), status="queued")
    job = add_job(db, sid)
    beat = Heartbeat(db=db, identity="here:1:aa", interval=0.05)
    beat.start()
    try:
        with db.session(read_only=True) as session:
            alive = health.alive_workers(session=session, settings=settings)
            assert [w.id for w in alive] == ["here:1:aa"]
            first_seen = alive[0].last_seen_at
        beat.set_job(job)
        deadline = utcnow() + dt.timedelta(seconds=10)
        while utcnow() < deadline:
            with db.session(read_only=True) as session:
                row = session.get(WorkerHeartbeat, "here:1:aa")
                if row.current_job_id == job and row.last_seen_at > first_seen:
                    break
        assert row.current_job_id == job and row.last_seen_at > first_seen
    finally:
        beat.stop()
    with db.session(read_only=True) as session:
        assert session.get(WorkerHeartbeat, "here:1:aa") is None


def test_queue_report_orders_running_queued_then_unqueued(settings: Settings, db: Database) -> None:
    user = make_user(db, settings)
    bench = make_benchmark(db)
    waiting = make_submission(db, settings, user, benchmark_id=bench)
    queued = make_submission(db, settings, user, benchmark_id=bench, status="queued")
    running = make_submission(db, settings, user, benchmark_id=bench, status="evaluating")
    add_job(db, queued)
    now = utcnow()
    job = add_running_job(
        db,
        running,
        owner="gpu-1:77:aa",
        lease_left=HOUR,
        running_for=dt.timedelta(0),
        attempts=2,
        now=now,
    )
    add_worker(db, "gpu-1:77:aa", seen=now, node="gpu-1", pid=77, job_id=job)
    add_worker(db, "gpu-2:88:bb", seen=now - HOUR, node="gpu-2", pid=88)
    with db.session(read_only=True) as session:
        report = health.queue_report(session=session, settings=settings)
    assert [(i.submission_id, i.status) for i in report.items] == [
        (running, SubmissionStatus.EVALUATING),
        (queued, SubmissionStatus.QUEUED),
        (waiting, SubmissionStatus.UPLOADED),
    ]
    assert (report.items[0].attempts, report.items[0].node) == (2, "gpu-1")
    by_id = {w.id: w for w in report.workers}
    assert by_id["gpu-1:77:aa"].alive and by_id["gpu-1:77:aa"].current_submission_id == running
    assert not by_id["gpu-2:88:bb"].alive
