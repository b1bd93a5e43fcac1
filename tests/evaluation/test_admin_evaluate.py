"""`submissions evaluate ID`: benchmarks without auto-evaluation wait for an administrator."""

from __future__ import annotations

from tests.helpers.factories import make_benchmark, make_submission, make_user, status_of
from zerospeech_api.evaluation import jobs
from zerospeech_api.evaluation.worker import Worker


def test_manual_benchmark_waits_for_the_admin_command_and_reruns(settings, db, run_cli):
    def work() -> None:
        worker = Worker(settings, db=db)
        worker.run(once=True)
        worker.mailer.close()

    user = make_user(db, settings)
    bench = make_benchmark(db, auto_eval=False)
    sid = make_submission(db, settings, user, benchmark_id=bench)
    work()
    assert status_of(db, sid) == "uploaded"
    result = run_cli("submissions", "evaluate", sid)
    assert result.exit_code == 0, result.output
    assert status_of(db, sid) == "queued"
    again = run_cli("submissions", "evaluate", sid)
    assert again.exit_code == 1 and jobs.ALREADY_QUEUED in again.output
    work()
    assert status_of(db, sid) == "completed"
    assert run_cli("submissions", "evaluate", sid).exit_code == 0  # a re-run of a completed one
    work()
    assert status_of(db, sid) == "completed"
    missing = run_cli("submissions", "evaluate", "nope")
    assert missing.exit_code == 1 and "no submission nope" in missing.output
