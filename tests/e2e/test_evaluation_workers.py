"""Real `worker` processes against a real `serve`: from an uploaded archive to a ranked public
entry, command evaluators, unsafe archives, kill -9 mid-job, SIGTERM, several workers."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.factories import (
    bearer,
    events_of,
    make_benchmark,
    make_evaluator,
    make_leaderboard,
    make_submission,
    make_user,
    realistic_entry,
    status_of,
    submission_files,
    zip_bytes,
)
from tests.helpers.outbox import outbox_messages
from tests.helpers.processes import process_alive, wait_for
from tests.helpers.server import Site
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import Job, JobState, LeaderboardEntry, SubmissionEvent
from zerospeech_api.leaderboards.results import read_results, results_path
from zerospeech_api.submissions import storage

pytestmark = pytest.mark.e2e

FAST = {
    "ZR_WORKER_POLL_SECONDS": "0.1",
    "ZR_JOB_LEASE_SECONDS": "5",
    "ZR_LEADERBOARD_RECHECK_SECONDS": "0",
}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    built = Site(tmp_path, FAST)
    try:
        built.start_server(workers=1)
        yield built
    finally:
        built.close()


def evaluator_script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "evaluator.py"
    path.write_text(body)
    return f"{sys.executable} {path} {{input}} {{output}}"


def test_uploaded_scores_submission_becomes_a_ranked_public_entry(site: Site) -> None:
    db, settings = site.db, site.settings
    user = make_user(db, settings)
    bench = make_benchmark(db, "sLM21")
    make_leaderboard(db, "slm21-lexical", bench)
    low = make_submission(
        db,
        settings,
        user,
        benchmark_id=bench,
        archive=zip_bytes(submission_files(realistic_entry(1, score=60.0))),
    )
    high = make_submission(
        db,
        settings,
        user,
        benchmark_id=bench,
        author_label="<b>Lovelace</b> et al.",
        archive=zip_bytes(submission_files(realistic_entry(2, score=90.0))),
    )
    site.worker()
    with site.server.client() as client:

        def board() -> list[dict]:
            data = client.get("/leaderboards/slm21-lexical/json").json()["data"]
            return data if len(data) == 2 else []

        data = wait_for(board, what="two published entries")
        assert [e["submission_id"] for e in data] == [high, low]
        assert [e["index"] for e in data] == [1, 2]
        assert data[0]["submitted_by"] == user.username
        assert data[0]["publication"]["author_short"] == "<b>Lovelace</b> et al."  # data, as sent
        scores = client.get(f"/submissions/{high}/scores").json()
        assert scores["leaderboards"] == ["slm21-lexical"]
        log = client.get(f"/submissions/{high}/log", headers=bearer(db, settings, user)).json()
        assert [e["status"] for e in log["events"] if e["status"]][-3:] == [
            "queued",
            "evaluating",
            "completed",
        ]
    mails = wait_for(lambda: len(outbox_messages(settings)) >= 2 and outbox_messages(settings))
    assert {m["to"] for m in mails} == {user.email}


def test_command_evaluator_success_failure_timeout_and_huge_log(site: Site) -> None:
    db, settings = site.db, site.settings
    body = (
        "import json, os, sys, time\n"
        "inp, out = sys.argv[1], sys.argv[2]\n"
        "mode = open(os.path.join(inp, 'mode.txt')).read().strip()\n"
        "print('mode', mode, flush=True)\n"
        "if mode == 'fail': sys.exit(4)\n"
        "if mode == 'hang': time.sleep(120)\n"
        "if mode == 'spam':\n"
        "    for i in range(50000): sys.stdout.write('%06d ' % i + 'y' * 100 + '\\n')\n"
        "    print('END OF SPAM')\n"
        "json.dump({'scores': {'abx': {'within': 6.5}}, 'description': mode}, open(out, 'w'))\n"
    )
    make_evaluator(db, "abx", evaluator_script(site.root, body), timeout=3)
    bench = make_benchmark(db, "abxLS", evaluator="abx")
    make_leaderboard(db, "abx-within", bench, sort_key="scores.abx.within", descending=False)
    user = make_user(db, settings)
    ids = {
        mode: make_submission(
            db,
            settings,
            user,
            benchmark_id=bench,
            has_scores=False,
            leaderboard_path="",
            archive=zip_bytes({"mode.txt": mode, "params.yaml": "x: 1\n"}),
        )
        for mode in ("ok", "fail", "hang", "spam")
    }
    site.worker(ZR_EVALUATION_LOG_MAX_BYTES="1000000")
    final = ("completed", "failed", "invalid")
    for sid in ids.values():
        wait_for(lambda sid=sid: status_of(db, sid) in final, what=f"{sid} evaluated")
    assert status_of(db, ids["ok"]) == "completed"
    assert status_of(db, ids["spam"]) == "completed"
    assert status_of(db, ids["fail"]) == "failed"
    assert status_of(db, ids["hang"]) == "failed"
    with db.session(read_only=True) as session:
        by_sid = {j.submission_id: j for j in session.query(Job)}
    assert by_sid[ids["fail"]].exit_code == 4
    assert "timed out after 3 s" in by_sid[ids["hang"]].last_error
    assert by_sid[ids["ok"]].duration_seconds > 0
    with site.server.client() as client:
        headers = bearer(db, settings, user)
        spam = client.get(f"/submissions/{ids['spam']}/log", headers=headers).json()
        assert spam["log_size"] < 1_100_000  # 5 MB printed, capped on disk
        assert "END OF SPAM" in spam["log"] and spam["log_truncated"]
        failed = client.get(f"/submissions/{ids['fail']}/log", headers=headers).json()
        assert "mode fail" in failed["log"]
        assert any("exit code 4" in e["message"] for e in failed["events"])
        board = client.get("/leaderboards/abx-within/json").json()["data"]
        assert sorted(e["description"] for e in board) == ["ok", "spam"]


def test_unsafe_archives_end_invalid_and_write_nothing_outside(site: Site) -> None:
    db, settings = site.db, site.settings
    user = make_user(db, settings)
    bench = make_benchmark(db)
    entry = json.dumps(realistic_entry(0))
    archives = {
        "dotdot": zip_bytes({"scores/leaderboard.json": entry, "../../../escaped.txt": "x"}),
        "absolute": zip_bytes(
            {"scores/leaderboard.json": entry, str(site.root / "abs-escaped.txt"): "x"}
        ),
        "symlink": zip_bytes({"scores/leaderboard.json": entry}, symlinks={"scores/up": "/"}),
        "bomb": zip_bytes({"scores/leaderboard.json": entry, "zeros": b"\0" * 3_000_000}),
    }
    ids = {
        name: make_submission(db, settings, user, benchmark_id=bench, archive=archive)
        for name, archive in archives.items()
    }
    site.worker(ZR_MAX_UNPACKED_BYTES="1000000")
    for sid in ids.values():
        wait_for(lambda sid=sid: status_of(db, sid) == "invalid", what=f"{sid} invalid")
    reasons = {name: events_of(db, sid)[-1].message for name, sid in ids.items()}
    assert "'..'" in reasons["dotdot"]
    assert "absolute path" in reasons["absolute"]
    assert "symbolic link" in reasons["symlink"]
    assert "too many bytes" in reasons["bomb"]
    assert not list(site.root.rglob("*escaped.txt"))
    for sid in ids.values():
        assert not list((settings.data_dir / "submissions" / sid).rglob("unpacked*"))


SLOW_ONCE = """
import json, os, subprocess, sys, time
inp, out = sys.argv[1], sys.argv[2]
runs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs.txt")
sid = os.environ["SUBMISSION_ID"]
with open(runs, "a") as f:
    f.write("start " + sid + "\\n")
starts = open(runs).read().count("start " + sid)
if starts == 1:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(runs + ".children", "a") as f:
        f.write(str(child.pid) + "\\n")
    time.sleep(120)
json.dump({"scores": {"v": starts}}, open(out, "w"))
with open(runs, "a") as f:
    f.write("done " + sid + "\\n")
"""


def read_if_exists(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def owner_pid(db: Database) -> int | None:
    with db.session(read_only=True) as session:
        job = session.query(Job).one_or_none()
        if job is None or job.lease_owner is None:
            return None
        return int(job.lease_owner.split(":")[1])


def test_kill_9_mid_job_is_rerun_by_another_worker_and_completes_once(site: Site) -> None:
    db, settings = site.db, site.settings
    make_evaluator(db, "slow-once", evaluator_script(site.root, SLOW_ONCE))
    bench = make_benchmark(db, evaluator="slow-once")
    make_leaderboard(db, "board", bench, sort_key="scores.v")
    user = make_user(db, settings)
    sid = make_submission(db, settings, user, benchmark_id=bench, has_scores=False)
    first, second = site.worker(), site.worker()
    runs = site.root / "runs.txt"
    wait_for(lambda: runs.exists() and "start" in runs.read_text(), what="first run")
    pid = wait_for(lambda: owner_pid(db), what="lease owner")
    victim = first if first.proc.pid == pid else second
    (child,) = map(int, wait_for(lambda: read_if_exists(Path(f"{runs}.children"))).split())
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)
    # The evaluator's own child dies with the worker too (not only the evaluator itself).
    wait_for(lambda: not process_alive(child), timeout=15, what="evaluator's child killed")
    wait_for(lambda: status_of(db, sid) == "completed", timeout=60, what="re-run completed")
    lines = runs.read_text().split()
    assert lines.count("start") == 2 and lines.count("done") == 1
    with db.session(read_only=True) as session:
        (job,) = session.query(Job).all()
        assert job.state == JobState.DONE and job.attempts == 2
        assert session.query(LeaderboardEntry).filter_by(submission_id=sid).count() == 1
    statuses = [e.status for e in events_of(db, sid) if e.status]
    assert statuses.count("completed") == 1
    assert "queued" in statuses[statuses.index("evaluating") :]  # re-queued after the kill


def test_sigterm_releases_a_long_job_without_counting_it(site: Site) -> None:
    db, settings = site.db, site.settings
    make_evaluator(db, "slow-once", evaluator_script(site.root, SLOW_ONCE))
    bench = make_benchmark(db, evaluator="slow-once")
    user = make_user(db, settings)
    sid = make_submission(db, settings, user, benchmark_id=bench, has_scores=False)
    worker = site.worker(ZR_WORKER_STOP_GRACE_SECONDS="0.5")
    wait_for(lambda: status_of(db, sid) == "evaluating", what="evaluating")
    wait_for(lambda: (site.root / "runs.txt").exists(), what="evaluator started")
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0
    assert status_of(db, sid) == "queued"
    with db.session(read_only=True) as session:
        (job,) = session.query(Job).all()
        assert job.state == JobState.QUEUED and job.attempts == 0
    site.worker()
    wait_for(lambda: status_of(db, sid) == "completed", what="completed by the next worker")


# Records its pid and waits at a gate named after its run number, then writes {"v": run}.
GATED = """
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "runs.txt"), "a") as f:
    f.write("start %d\\n" % os.getpid())
run = open(os.path.join(here, "runs.txt")).read().count("start")
while not os.path.exists(os.path.join(here, "gate-%d" % run)):
    time.sleep(0.05)
json.dump({"scores": {"v": run}}, open(sys.argv[2], "w"))
"""


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


def test_a_worker_paused_past_its_lease_writes_nothing_when_it_wakes(site: Site) -> None:
    db, settings = site.db, site.settings
    make_evaluator(db, "gated", evaluator_script(site.root, GATED))
    bench = make_benchmark(db, evaluator="gated")
    make_leaderboard(db, "board", bench, sort_key="scores.v")
    user = make_user(db, settings)
    sid = make_submission(db, settings, user, benchmark_id=bench, has_scores=False)
    runs = site.root / "runs.txt"
    first = site.worker()
    wait_for(lambda: read_if_exists(runs).count("start") == 1, what="first evaluation")
    evaluator = int(runs.read_text().split()[1])
    supervisor = parent_of(evaluator)
    with db.session(read_only=True) as session:
        job = session.query(Job).one()
        old = storage.attempt_dir(settings, sid, job.id, job.claims)
        holder = job.lease_owner
    # Freeze worker A and its evaluator, as a paused VM would; B takes over after the lease.
    paused = [(os.kill, first.proc.pid), (os.kill, supervisor), (os.killpg, evaluator)]
    for send, pid in paused:
        send(pid, signal.SIGSTOP)
    log_before = (old / "evaluation.log").read_bytes()
    site.worker()
    wait_for(lambda: runs.read_text().count("start") == 2, what="second attempt running")
    (site.root / "gate-1").touch()  # A's evaluation is over the moment it wakes up
    for send, pid in reversed(paused):
        send(pid, signal.SIGCONT)
    wait_for(lambda: "lease lost" in first.output(), what="A notices it lost the lease")
    assert status_of(db, sid) == "evaluating"
    assert not results_path(settings, sid).exists()
    assert (old / "evaluation.log").read_bytes() == log_before  # A wrote nothing more
    (site.root / "gate-2").touch()
    wait_for(lambda: status_of(db, sid) == "completed", what="the new attempt completes")
    assert read_results(results_path(settings, sid))[""]["scores"] == {"v": 2}
    with db.session(read_only=True) as session:
        (entry,) = session.query(LeaderboardEntry).filter_by(submission_id=sid).all()
        assert entry.data["scores"] == {"v": 2}
        job = session.query(Job).one()
        assert job.state == JobState.DONE and job.attempts == 2 and job.claims == 2
    events = events_of(db, sid)
    claimed_by_a = next(i for i, e in enumerate(events) if holder in e.message)
    assert all(holder not in e.message for e in events[claimed_by_a + 1 :])
    assert [e.status for e in events].count("completed") == 1
    assert {p.name for p in old.iterdir()} <= {"evaluation.log"}
    with site.server.client() as client:
        shown = client.get(f"/submissions/{sid}/log", headers=bearer(db, settings, user)).json()
    assert holder not in shown["log"] and "attempt 2 by worker" in shown["log"]
    assert first.alive()  # A carries on with other jobs


COUNTING = """
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "seen.txt"), "a") as f:
    f.write(os.environ["SUBMISSION_ID"] + "\\n")
time.sleep(0.2)
json.dump({"scores": {"v": 1}}, open(sys.argv[2], "w"))
"""


def test_several_workers_never_run_the_same_job_twice(site: Site) -> None:
    db, settings = site.db, site.settings
    make_evaluator(db, "counting", evaluator_script(site.root, COUNTING))
    bench = make_benchmark(db, evaluator="counting")
    user = make_user(db, settings)
    workers = [site.worker() for _ in range(3)]
    for worker in workers:
        wait_for(lambda worker=worker: "started" in worker.output(), what="worker up")
    ids = [
        make_submission(db, settings, user, benchmark_id=bench, has_scores=False) for _ in range(15)
    ]
    for sid in ids:
        wait_for(lambda sid=sid: status_of(db, sid) == "completed", what=f"{sid} completed")
    seen = Counter((site.root / "seen.txt").read_text().split())
    assert seen == Counter(ids)
    with db.session(read_only=True) as session:
        claims = [
            e.message
            for e in session.query(SubmissionEvent).filter(SubmissionEvent.status == "evaluating")
        ]
    assert len(claims) == 15
    owners = {message.split("claimed by worker ")[1].split(" ")[0] for message in claims}
    assert len(owners) >= 2  # the work really was shared between processes


def test_real_zrc_upload_is_evaluated_and_published_without_a_manual_step(site: Site) -> None:
    from tests.helpers.factories import DEFAULT_PASSWORD, make_archive
    from tests.helpers.zrc import ZrcDriver

    db, settings = site.db, site.settings
    user = make_user(db, settings)
    bench = make_benchmark(db, "sLM21")
    make_leaderboard(db, "slm21-lexical", bench)
    site.worker()
    archive = make_archive(site.root / "sub.zip", payload_bytes=300_000, seed=3)
    with ZrcDriver(
        site.server.url,
        site.root / "zrc",
        username=user.username,
        password=DEFAULT_PASSWORD,
        part_size=100_000,
    ) as driver:
        sid = driver.submit(archive, bench, multipart=True, order=[3, 0, 2, 1])
    with ZrcDriver(
        site.server.url,
        site.root / "zrc-test",
        username=user.username,
        password=DEFAULT_PASSWORD,
    ) as driver:
        test_sid = driver.submit(archive, "test-challenge", multipart=False)
    with site.server.client() as client:

        def published() -> list[dict]:
            return client.get("/leaderboards/slm21-lexical/json").json()["data"]

        (entry,) = wait_for(published, what="entry published from a real upload")
        assert entry["submission_id"] == sid and entry["index"] == 1
        assert entry["submitted_by"] == user.username
        wait_for(lambda: status_of(db, test_sid) == "completed", what="test-challenge evaluated")
        assert client.get(f"/submissions/{test_sid}/scores").status_code == 401
        assert [e["submission_id"] for e in published()] == [sid]
