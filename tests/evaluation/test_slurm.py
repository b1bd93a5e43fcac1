"""The slurm runner against a real single-node Slurm (tests/helpers/slurm.py) and real `worker`
and `serve` processes: many jobs in flight from one worker, completion and publication, a
failing job with its log, a timeout, kill -9 of the worker mid-job (adopted, completes once, no
orphan), a Slurm job left by a worker that died right after sbatch, cancel (CLI and HTTP)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.helpers.cli import invoke_cli
from tests.helpers.factories import (
    bearer,
    events_of,
    make_benchmark,
    make_leaderboard,
    make_submission,
    status_of,
    zip_bytes,
)
from tests.helpers.processes import process_alive, wait_for
from tests.helpers.server import Site
from tests.helpers.slurm import SlurmCluster, slurm_fixture  # noqa: F401 - the `slurm` fixture
from zerospeech_api.db.tables import Job, JobState, Submission, User, utcnow
from zerospeech_api.evaluation.slurm import job_comment, job_name

# One xdist worker runs them all, so the session starts one Slurm cluster.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("slurm")]

FAST = {
    "ZR_WORKER_POLL_SECONDS": "0.1",
    "ZR_JOB_LEASE_SECONDS": "5",
    "ZR_LEADERBOARD_RECHECK_SECONDS": "0",
    "ZR_SLURM_POLL_SECONDS": "0.3",
}

# Runs on the compute node (this host): notes each start and end in runs.txt next to itself.
EVALUATOR = """
import json, os, sys, time
inp, out = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
mode = open(os.path.join(inp, "mode.txt")).read().strip()
sid = os.environ["SUBMISSION_ID"]
def note(what):
    with open(os.path.join(here, "runs.txt"), "a") as f:
        f.write("%s %s %s %.3f %d\\n" % (what, sid, mode, time.time(), os.getpid()))
note("start")
print("mode", mode, "in Slurm job", os.environ.get("SLURM_JOB_ID"), flush=True)
if mode == "fail":
    print("something went wrong", flush=True)
    sys.exit(4)
if mode == "hang":
    time.sleep(600)
if mode == "gate":
    while not os.path.exists(os.path.join(here, "gate-" + sid)):
        time.sleep(0.1)
if mode == "ok":
    time.sleep(3)
json.dump({"scores": {"abx": {"within": 6.5}}, "description": mode}, open(out, "w"))
note("done")
"""


@pytest.fixture
def site(tmp_path: Path, slurm: SlurmCluster) -> Iterator[Site]:
    built = Site(tmp_path, FAST)
    try:
        built.start_server(workers=1)
        yield built
    finally:
        built.close()


def slurm_evaluator(site: Site, name: str, *, timeout: int = 600) -> None:
    """A slurm-runner evaluator made as an operator would, with `evaluators create`."""
    script = site.root / "evaluator.py"
    script.write_text(EVALUATOR)
    created = invoke_cli(
        site.env_file,
        "evaluators",
        "create",
        name,
        "--runner",
        "slurm",
        "--command",
        f"{sys.executable} {script} {{input}} {{output}}",
        "--timeout",
        str(timeout),
        "--sbatch-args",
        "--partition=debug --mem=64M",
    )
    assert created.exit_code == 0, created.output


def submit(site: Site, user: User, bench: str, mode: str) -> str:
    archive = zip_bytes({"mode.txt": mode, "params.yaml": "x: 1\n"})
    return make_submission(
        site.db,
        site.settings,
        user,
        benchmark_id=bench,
        has_scores=False,
        leaderboard_path="",
        archive=archive,
    )


def runs(site: Site) -> list[list[str]]:
    path = site.root / "runs.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def latest_job(site: Site, submission_id: str) -> Job | None:
    with site.db.session(read_only=True) as session:
        return session.scalars(
            select(Job).where(Job.submission_id == submission_id).order_by(Job.id.desc())
        ).first()


def job_of(site: Site, submission_id: str) -> Job:
    job = latest_job(site, submission_id)
    assert job is not None, f"{submission_id} has no job"
    return job


def recorded_slurm_job(site: Site, submission_id: str) -> str | None:
    job = latest_job(site, submission_id)
    return job.slurm_job_id if job else None


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one moment."""
    marks = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = best = 0
    for _, step in marks:
        running += step
        best = max(best, running)
    return best


def no_orphans(slurm: SlurmCluster) -> bool:
    return not [job for job in slurm.live_jobs() if job[1].startswith("zr-sub")]


def test_one_worker_keeps_many_jobs_in_flight_and_ends_them_as_the_local_runner(
    site: Site, slurm: SlurmCluster
) -> None:
    db = site.db
    slurm_evaluator(site, "abx-slurm", timeout=1)  # Slurm: a one-minute time limit
    bench = make_benchmark(db, "abxSlurm", evaluator="abx-slurm")
    make_leaderboard(db, "abx-slurm", bench, sort_key="scores.abx.within", descending=False)
    user = site.user()
    modes = ["ok"] * 6 + ["fail", "hang"]
    ids = {f"{mode}{n}": submit(site, user, bench, mode) for n, mode in enumerate(modes)}
    worker = site.worker(**slurm.env)
    final = ("completed", "failed", "invalid")
    for sid in ids.values():
        wait_for(lambda sid=sid: status_of(db, sid) in final, timeout=180, what=f"{sid} ended")
    ok = [sid for name, sid in ids.items() if name.startswith("ok")]
    assert [status_of(db, sid) for sid in ok] == ["completed"] * 6
    # One worker, many Slurm jobs at once: the evaluations overlapped in Slurm.
    notes = runs(site)
    spans = {n[1]: [float(n[3])] for n in notes if n[0] == "start"}
    for n in notes:
        if n[0] == "done":
            spans[n[1]].append(float(n[3]))
    assert most_at_once([(s[0], s[1]) for sid, s in spans.items() if sid in ok]) >= 3
    in_flight = [int(m) for m in re.findall(r"\((\d+) in flight\)", worker.output())]
    assert max(in_flight) >= 4, worker.output()[-3000:]
    # Every job was submitted once, as `zr-<submission id>`, and nothing is left in Slurm.
    names = [name for _, name, _ in slurm.jobs()]
    for sid in ids.values():
        assert names.count(job_name(sid)) == 1
        job = job_of(site, sid)
        assert job.slurm_job_id is not None and not job.slurm_active
    assert no_orphans(slurm)
    with site.server.client() as client:  # type: ignore[union-attr]
        headers = bearer(db, site.settings, user)
        board = client.get("/leaderboards/abx-slurm/json").json()["data"]
        assert sorted(e["submission_id"] for e in board) == sorted(ok)
        scores = client.get(f"/submissions/{ok[0]}/scores", headers=headers).json()
        assert scores["entry"]["scores"] == {"abx": {"within": 6.5}}
        shown = client.get(f"/submissions/{ok[0]}/log", headers=headers).json()
        assert "mode ok in Slurm job" in shown["log"]  # the job's output is in the log
        # A failing job: failed with its exit code and its output, as the local runner says.
        failed = client.get(f"/submissions/{ids['fail6']}/log", headers=headers).json()
        assert "something went wrong" in failed["log"]
        assert any("evaluator failed with exit code 4" in e["message"] for e in failed["events"])
    assert status_of(db, ids["fail6"]) == "failed" and job_of(site, ids["fail6"]).exit_code == 4
    # The time limit: Slurm's TIMEOUT is the local runner's timeout outcome.
    assert status_of(db, ids["hang7"]) == "failed"
    assert "evaluator timed out after 60 s and was killed" in (
        job_of(site, ids["hang7"]).last_error or ""
    )
    assert worker.alive()


def test_kill_9_mid_job_the_next_worker_adopts_the_slurm_job(
    site: Site, slurm: SlurmCluster
) -> None:
    db = site.db
    slurm_evaluator(site, "gated")
    bench = make_benchmark(db, evaluator="gated")
    make_leaderboard(db, "gated", bench, sort_key="scores.abx.within")
    sid = submit(site, site.user(), bench, "gate")
    first = site.worker(**slurm.env)
    slurm_job = wait_for(lambda: recorded_slurm_job(site, sid), what="the Slurm job id recorded")
    wait_for(lambda: [n for n in runs(site) if n[0] == "start"], what="the evaluation running")
    first.signal(signal.SIGKILL)
    first.proc.wait(10)
    second = site.worker(**slurm.env)
    wait_for(
        lambda: any("adopted Slurm job" in e.message for e in events_of(db, sid)),
        timeout=60,
        what="the second worker adopts the Slurm job",
    )
    (site.root / f"gate-{sid}").touch()
    wait_for(lambda: status_of(db, sid) == "completed", timeout=60, what="completed")
    assert [n[0] for n in runs(site)] == ["start", "done"]  # it ran once
    job = job_of(site, sid)
    assert job.slurm_job_id == slurm_job and job.state == JobState.DONE and job.attempts == 2
    assert [name for _, name, _ in slurm.jobs()].count(job_name(sid)) == 1
    assert no_orphans(slurm)
    assert second.alive()


def test_a_slurm_job_nobody_recorded_is_cancelled_before_the_evaluation_is_resubmitted(
    site: Site, slurm: SlurmCluster
) -> None:
    db = site.db
    slurm_evaluator(site, "quick")
    bench = make_benchmark(db, evaluator="quick")
    sid = submit(site, site.user(), bench, "quick")
    # A worker claimed the job, marked it as submitting, ran sbatch and died before it could
    # record the Slurm job id: all that is left is the job's row and the Slurm job itself.
    with db.transaction() as session:
        job = Job(
            submission_id=sid,
            state=JobState.RUNNING,
            attempts=1,
            claims=1,
            max_attempts=3,
            lease_owner="dead-host:1:abcdef",
            lease_expires_at=utcnow(),
            slurm_active=True,
            slurm_claim=1,
        )
        session.add(job)
        session.execute(update(Submission).where(Submission.id == sid).values(status="evaluating"))
        session.flush()
        job_id = job.id
    orphan = subprocess.run(
        ["sbatch", "--parsable", f"--job-name={job_name(sid)}",
         f"--comment={job_comment(job_id, 1)}", "--output=/dev/null", "--wrap=sleep 300"],
        env={**os.environ, **slurm.env}, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    site.worker(**slurm.env)
    wait_for(lambda: status_of(db, sid) == "completed", timeout=90, what="completed")
    states = {job_id: state for job_id, _, state in slurm.jobs()}
    assert states[orphan] == "CANCELLED"
    assert [n[0] for n in runs(site)] == ["start", "done"]
    assert job_of(site, sid).slurm_job_id != orphan
    assert no_orphans(slurm)


def test_cancel_from_the_cli_and_http_stops_slurm_and_local_evaluations(
    site: Site, slurm: SlurmCluster
) -> None:
    db = site.db
    slurm_evaluator(site, "gated")
    on_slurm = make_benchmark(db, evaluator="gated", quota="5/1d")
    local_script = site.root / "local.py"
    local_script.write_text(EVALUATOR)
    created = invoke_cli(
        site.env_file, "evaluators", "create", "gated-local",
        "--command", f"{sys.executable} {local_script} {{input}} {{output}}",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    local = make_benchmark(db, evaluator="gated-local")
    user = site.user()
    by_cli, by_http = submit(site, user, on_slurm, "gate"), submit(site, user, on_slurm, "gate")
    local_sid = submit(site, user, local, "gate")  # claimed last: it blocks the job loop
    site.worker(**slurm.env)
    slurm_jobs = {
        sid: wait_for(lambda sid=sid: recorded_slurm_job(site, sid), what=f"{sid} submitted")
        for sid in (by_cli, by_http)
    }
    wait_for(lambda: len([n for n in runs(site) if n[0] == "start"]) == 3, what="all running")
    local_pid = next(int(n[4]) for n in runs(site) if n[1] == local_sid)

    for sid in (by_cli, local_sid):
        cancelled = invoke_cli(site.env_file, "submissions", "cancel", sid)
        assert cancelled.exit_code == 0, cancelled.output
        assert "stops the running evaluation" in cancelled.output
    with site.server.client() as client:  # type: ignore[union-attr]
        headers = bearer(db, site.settings, user)
        answer = client.post(f"/submissions/{by_http}/cancel", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["evaluation_stopped"] is True
        again = invoke_cli(site.env_file, "submissions", "cancel", by_http)
        assert again.exit_code == 1 and "cannot be cancelled" in again.output

        def gone() -> bool:
            live = {job_id for job_id, _, _ in slurm.live_jobs()}
            return not live & set(slurm_jobs.values())

        wait_for(gone, timeout=30, what="the Slurm jobs cancelled")
        wait_for(lambda: not process_alive(local_pid), timeout=30, what="local evaluator killed")
        for sid in (by_cli, by_http, local_sid):
            assert status_of(db, sid) == "cancelled"
        messages = [e.message for e in events_of(db, by_cli)]
        assert any("cancelled by an administrator (command line)" in m for m in messages)
        wait_for(
            lambda: any("cancelled (scancel)" in e.message for e in events_of(db, by_http)),
            what="the scancel in the log",
        )
        # Cancelled submissions do not count toward the quota.
        quota = client.get(f"/users/{user.username}/quota", headers=headers).json()
        (row,) = [q for q in quota["quotas"] if q["benchmark"] == on_slurm]
        assert row["used"] == 0 and row["remaining"] == 5
    states = {job_id: state for job_id, _, state in slurm.jobs()}
    assert {states[j] for j in slurm_jobs.values()} == {"CANCELLED"}
    assert not [n for n in runs(site) if n[0] == "done"]  # nothing finished
    assert no_orphans(slurm)


def test_sigterm_hands_the_slurm_jobs_on_and_a_cancel_meanwhile_is_still_scancelled(
    site: Site, slurm: SlurmCluster
) -> None:
    db = site.db
    slurm_evaluator(site, "gated")
    bench = make_benchmark(db, evaluator="gated")
    user = site.user()
    kept, dropped = submit(site, user, bench, "gate"), submit(site, user, bench, "gate")
    first = site.worker(**slurm.env)
    slurm_jobs = {
        sid: wait_for(lambda sid=sid: recorded_slurm_job(site, sid), what=f"{sid} submitted")
        for sid in (kept, dropped)
    }
    first.signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0  # it does not wait for its Slurm jobs
    for sid in (kept, dropped):
        job = job_of(site, sid)
        assert (job.state, job.attempts, job.slurm_active) == (JobState.QUEUED, 0, True)
        assert status_of(db, sid) == "queued"
    live = {job_id for job_id, _, _ in slurm.live_jobs()}
    assert set(slurm_jobs.values()) <= live  # still running in Slurm
    # Cancelled while no worker runs: the next worker cancels its Slurm job.
    assert invoke_cli(site.env_file, "submissions", "cancel", dropped).exit_code == 0
    site.worker(**slurm.env)
    wait_for(
        lambda: any("adopted Slurm job" in e.message for e in events_of(db, kept)),
        what="the next worker adopts the running Slurm job",
    )
    wait_for(
        lambda: slurm_jobs[dropped] not in {job_id for job_id, _, _ in slurm.live_jobs()},
        what="the cancelled submission's Slurm job scancelled",
    )
    (site.root / f"gate-{kept}").touch()
    wait_for(lambda: status_of(db, kept) == "completed", timeout=60, what="completed")
    assert [n[0] for n in runs(site) if n[1] == kept] == ["start", "done"]
    assert job_of(site, kept).slurm_job_id == slurm_jobs[kept]
    assert status_of(db, dropped) == "cancelled"
    assert any("cancelled (scancel)" in e.message for e in events_of(db, dropped))
    assert no_orphans(slurm)
