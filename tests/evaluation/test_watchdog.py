"""The watchdog over a real database, a local webhook receiver and the outbox: one process per
period, safe fixes without alerts, one alert per problem and one when it clears, failed fixes
and platform failures alerted, a participant's `invalid` not."""

from __future__ import annotations

import datetime as dt
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

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
    status_of,
    zip_bytes,
)
from tests.helpers.outbox import outbox_messages
from tests.helpers.webhook import WebhookReceiver, webhook_receiver
from zerospeech_api.alerts import Alerter
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Alert, JobState, WatchdogTurn, WorkerHeartbeat, utcnow
from zerospeech_api.evaluation import health, jobs
from zerospeech_api.evaluation.watchdog import (
    TURN,
    Fix,
    Report,
    Watchdog,
    take_turn,
    watch,
    worker_fixes,
)
from zerospeech_api.evaluation.worker import Worker
from zerospeech_api.mail import Mailer
from zerospeech_api.settings import Settings
from zerospeech_api.submissions import storage

OPERATORS = "ops@example.org, oncall@example.org"


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
def alerting(
    make_settings: Callable[..., Settings], migrated_database_url: str, hook: WebhookReceiver
) -> Settings:
    """Settings with both alert channels: the local receiver and the outbox."""
    return make_settings(
        database_url=migrated_database_url,
        alert_webhook_url=hook.url,
        operator_email=OPERATORS,
    )


def run_watch(db: Database, settings: Settings, fixes: dict[str, Fix] | None = None) -> Report:
    """One watchdog run; returns once every alert it sent was delivered."""
    mailer = Mailer(settings)
    alerter = Alerter(settings, mailer)
    try:
        return watch(db=db, settings=settings, alerter=alerter, fixes=fixes or {})
    finally:
        alerter.close()
        mailer.close()


def fixes_of(db: Database, settings: Settings) -> dict[str, Fix]:
    return worker_fixes(
        db=db, settings=settings, requeue_expired=lambda: jobs.requeue_expired(db=db)
    )


def test_a_stuck_state_is_alerted_once_then_resolved(
    alerting: Settings, db: Database, hook
) -> None:
    settings = alerting
    user = make_user(db, settings)
    sid = make_submission(db, settings, user, benchmark_id=make_benchmark(db), status="queued")
    add_job(db, sid, created_at=utcnow() - HOUR)
    for _ in range(3):  # checked every period, sent once
        run_watch(db, settings)
    texts = hook.texts()
    assert len(texts) == 1
    assert "no worker is alive" in texts[0] and "zerospeech-api worker" in texts[0]
    assert hook.deliveries[0].content_type == "application/json"
    mails = outbox_messages(settings)
    assert [(m["to"], "no-worker" in m["subject"]) for m in mails] == [(OPERATORS, True)]
    assert "Fix: start workers" in mails[0]["body"]

    add_worker(db, "back:1:aa", seen=utcnow())
    run_watch(db, settings)
    run_watch(db, settings)
    assert len(hook.texts()) == 2 and "resolved (no-worker)" in hook.texts()[1]
    subjects = sorted(m["subject"].split(":")[0] for m in outbox_messages(settings))
    assert subjects == ["[zerospeech-api] no-worker", "[zerospeech-api] resolved"]

    with db.transaction() as session:  # the worker goes silent again: a new occurrence
        session.execute(update(WorkerHeartbeat).values(last_seen_at=utcnow() - HOUR))
    run_watch(db, settings)
    assert len(hook.texts()) == 3 and "no worker is alive" in hook.texts()[2]


def test_worker_fixes_queue_join_and_requeue_without_alerting(
    alerting: Settings, db: Database, hook
) -> None:
    settings = alerting
    user = make_user(db, settings)
    bench = make_benchmark(db)
    unqueued = make_submission(db, settings, user, benchmark_id=bench)
    age(db, unqueued, HOUR)
    unjoined = make_received_upload(
        db,
        settings,
        user,
        benchmark_id=bench,
        parts=[b"PK" * 50, b"x" * 9],
        received_at=utcnow() - HOUR,
    )
    orphan = make_submission(db, settings, user, benchmark_id=bench, status="evaluating")
    now = utcnow()
    add_running_job(
        db,
        orphan,
        owner="dead:1:aa",
        lease_left=-HOUR,
        running_for=2 * HOUR,
        attempts=1,
        now=now,
    )
    add_worker(db, "me:2:bb", seen=now)
    report = run_watch(db, settings, fixes_of(db, settings))
    assert {p.kind for p in report.fixed} == {
        health.NOT_QUEUED,
        health.NOT_JOINED,
        health.LEASE_EXPIRED,
    }
    assert status_of(db, unqueued) == "queued"
    assert status_of(db, unjoined) == "uploaded"
    assert storage.archive_path(settings, unjoined).read_bytes() == b"PK" * 50 + b"x" * 9
    assert status_of(db, orphan) == "queued"
    assert hook.texts() == [] and outbox_messages(settings) == []
    with db.session(read_only=True) as session:
        assert health.find_problems(session=session, settings=settings) == []


def test_a_fix_that_fails_is_alerted_with_its_reason_until_it_works(
    alerting: Settings, db: Database, hook
) -> None:
    settings = alerting
    user = make_user(db, settings)
    sid = make_received_upload(
        db,
        settings,
        user,
        benchmark_id=make_benchmark(db),
        parts=[b"abc"],
        received_at=utcnow() - HOUR,
    )
    part = storage.part_path(settings, sid, 0)
    part.unlink()
    part.mkdir()  # unreadable as a file: the join fails with an I/O error, every time
    add_worker(db, "me:2:bb", seen=utcnow())
    run_watch(db, settings, fixes_of(db, settings))
    run_watch(db, settings, fixes_of(db, settings))
    assert len(hook.texts()) == 1
    text = hook.texts()[0]
    assert f"submission {sid}" in text and "could not fix it" in text
    assert "Is a directory" in text and f"zerospeech-api submissions rejoin {sid}" in text
    part.rmdir()
    part.write_bytes(b"abc")
    run_watch(db, settings, fixes_of(db, settings))
    assert status_of(db, sid) == "uploaded"
    assert len(hook.texts()) == 2 and f"resolved (not-joined:{sid})" in hook.texts()[1]


def test_one_process_takes_each_turn_and_tidies_up(settings: Settings, db: Database) -> None:
    now = utcnow()
    add_worker(db, "long-gone:1:aa", seen=now - dt.timedelta(days=2))
    add_worker(db, "recent:1:aa", seen=now - HOUR)
    with db.transaction() as session:
        session.add(
            Alert(
                key="old",
                kind="x",
                message="m",
                command="",
                resolved_at=now - dt.timedelta(days=40),
            )
        )
        session.add(Alert(key="open", kind="x", message="m", command="", resolved_at=None))
    databases = [Database(settings.database) for _ in range(4)]
    won: list[bool] = []
    barrier = threading.Barrier(len(databases))

    def contend(database: Database, who: str) -> None:
        barrier.wait()
        won.append(take_turn(db=database, who=who, interval=60))

    try:
        threads = [
            threading.Thread(target=contend, args=(d, f"p{n}")) for n, d in enumerate(databases)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for database in databases:
            database.dispose()
    assert sorted(won) == [False, False, False, True]
    assert not take_turn(db=db, who="late", interval=60)
    with db.session(read_only=True) as session:
        assert session.scalars(select(WorkerHeartbeat.id)).all() == ["recent:1:aa"]
        assert session.scalars(select(Alert.key)).all() == ["open"]
    with db.transaction() as session:
        session.execute(
            update(WatchdogTurn)
            .where(WatchdogTurn.name == TURN)
            .values(ran_at=utcnow() - dt.timedelta(seconds=61))
        )
    assert take_turn(db=db, who="next", interval=60)


def test_servers_stand_by_while_a_worker_is_alive(alerting: Settings, db: Database) -> None:
    mailer = Mailer(alerting)
    alerter = Alerter(alerting, mailer)
    standby = Watchdog(db=db, settings=alerting, alerter=alerter, who="server", standby=True)
    try:
        add_worker(db, "w:1:aa", seen=utcnow())
        assert standby.run_once() is None
        with db.transaction() as session:
            session.execute(update(WorkerHeartbeat).values(last_seen_at=utcnow() - HOUR))
        assert isinstance(standby.run_once(), Report)
    finally:
        alerter.close()
        mailer.close()


FAILING = """
import os, sys
mode = open(os.path.join(sys.argv[1], "mode.txt")).read().strip()
sys.exit({"broken": 4, "bad-input": 65}[mode])
"""


def test_platform_failures_alert_once_and_invalid_never(
    alerting: Settings, db: Database, hook, tmp_path: Path
) -> None:
    settings = alerting
    script = tmp_path / "evaluator.py"
    script.write_text(FAILING)
    make_evaluator(db, "fragile", f"{sys.executable} {script} {{input}} {{output}}")
    bench = make_benchmark(db, evaluator="fragile")
    user = make_user(db, settings)
    ids = {
        mode: make_submission(
            db,
            settings,
            user,
            benchmark_id=bench,
            has_scores=False,
            archive=zip_bytes({"mode.txt": mode}),
        )
        for mode in ("broken", "bad-input")
    }
    worker = Worker(settings, db=db)
    worker.run(once=True)
    worker.alerter.close()
    worker.mailer.close()
    assert status_of(db, ids["broken"]) == "failed"
    assert status_of(db, ids["bad-input"]) == "invalid"
    texts = hook.texts()
    assert len(texts) == 1
    assert f"submission {ids['broken']} failed" in texts[0] and "exit code 4" in texts[0]
    assert f"zerospeech-api submissions evaluate {ids['broken']}" in texts[0]
    operator_mails = [m for m in outbox_messages(settings) if m["to"] == OPERATORS]
    assert len(operator_mails) == 1 and "platform-failure" in operator_mails[0]["subject"]


def test_a_job_abandoned_by_dying_workers_alerts(alerting: Settings, db: Database, hook) -> None:
    settings = alerting
    user = make_user(db, settings)
    sid = make_submission(db, settings, user, benchmark_id=make_benchmark(db), status="evaluating")
    now = utcnow()
    add_job(
        db,
        sid,
        state=JobState.RUNNING,
        lease_owner="dead:1:aa",
        lease_expires_at=now - HOUR,
        attempts=3,
        max_attempts=3,
    )
    worker = Worker(settings, db=db)
    worker.requeue_expired()
    worker.requeue_expired()
    worker.alerter.close()
    worker.mailer.close()
    assert status_of(db, sid) == "failed"
    [text] = hook.texts()
    assert f"submission {sid} failed" in text and "abandoned after 3 attempts" in text
