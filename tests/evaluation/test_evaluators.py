"""The scores and command evaluators on real files and real subprocesses."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.processes import process_alive, wait_for
from zerospeech_api.db.tables import SubmissionStatus
from zerospeech_api.evaluation import evaluators as ev
from zerospeech_api.leaderboards import entries, results

FACTS = results.SubmissionFacts(
    submission_id="sub123",
    model_id="model-abc",
    benchmark_id="sLM21",
    username="ada",
    submission_date="2021-03-22T23:00:44+00:00",
    author_label="Lovelace et al.",
    has_scores=True,
    leaderboard_path="scores/leaderboard.json",
)


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "evaluator.py"
    path.write_text(body)
    return f"{sys.executable} {path}"


def run(tmp_path: Path, command: str, *, timeout: float = 30, max_log: int = 1_000_000):
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir(exist_ok=True)
    (unpacked / "input.txt").write_text("42")
    sink = ev.LogSink(tmp_path / "evaluation.log", max_bytes=max_log)
    try:
        return ev.run_command(
            facts=FACTS,
            command=command,
            unpacked=unpacked,
            workdir=tmp_path / "work",
            timeout=timeout,
            log=sink,
            cancelled=lambda: None,
        )
    finally:
        sink.close()


WRITE_ENTRY = """
import json, os, sys
inp, out = sys.argv[1], sys.argv[2]
value = int(open(os.path.join(inp, "input.txt")).read())
print("evaluating", inp, "env:", sorted(os.environ))
json.dump({"submission_id": "forged", "index": 7, "scores": {"x": value}}, open(out, "w"))
"""


def test_command_success_writes_a_stamped_entry_and_sees_a_clean_env(tmp_path: Path) -> None:
    outcome = run(tmp_path, script(tmp_path, WRITE_ENTRY))
    assert outcome.status == SubmissionStatus.COMPLETED and outcome.exit_code == 0
    entry = outcome.entries[results.COMMAND_OUTPUT]
    assert entry["scores"] == {"x": 42}
    assert entry["submission_id"] == "sub123" and "index" not in entry
    assert entry["publication"]["author_short"] == "Lovelace et al."
    log = (tmp_path / "evaluation.log").read_text()
    assert "evaluating" in log
    env_line = next(line for line in log.splitlines() if "env:" in line)
    assert "ZR_SECRET_KEY" not in env_line and "PYTEST_CURRENT_TEST" not in env_line
    assert "'SUBMISSION_ID'" in env_line


def test_placeholders_are_replaced(tmp_path: Path) -> None:
    argv = ev.build_argv(
        "run --in={input} -o {output}", input_dir=Path("/a"), output_file=Path("/b")
    )
    assert argv == ["run", "--in=/a", "-o", "/b"]
    assert ev.build_argv("run x", input_dir=Path("/a"), output_file=Path("/b")) == [
        "run",
        "x",
        "/a",
        "/b",
    ]


def test_command_failure_and_invalid_exit_codes(tmp_path: Path) -> None:
    failed = run(tmp_path, script(tmp_path, "import sys; print('boom'); sys.exit(3)"))
    assert failed.status == SubmissionStatus.FAILED and failed.exit_code == 3
    assert "exit code 3" in failed.reason
    rejected = run(tmp_path, script(tmp_path, "import sys; sys.exit(65)"))
    assert rejected.status == SubmissionStatus.INVALID
    silent = run(tmp_path, script(tmp_path, "pass"))
    assert silent.status == SubmissionStatus.FAILED and "no entry" in silent.reason
    missing = run(tmp_path, "/no/such/evaluator")
    assert missing.status == SubmissionStatus.FAILED and "could not start" in missing.reason


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    body = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([{sys.executable!r}, '-c', 'import time; time.sleep(60)'])\n"
        "print('started', flush=True); time.sleep(60)\n"
    )
    started = time.monotonic()
    outcome = run(tmp_path, script(tmp_path, body), timeout=1)
    assert outcome.status == SubmissionStatus.FAILED and "timed out" in outcome.reason
    assert time.monotonic() - started < 30  # the grandchild did not keep the pipe open


def test_megabytes_of_log_are_capped_keeping_head_and_tail(tmp_path: Path) -> None:
    body = (
        "import sys\n"
        "sys.stdout.write('FIRST LINE\\n')\n"
        "for i in range(60000): sys.stdout.write('x' * 99 + '\\n')\n"
        "sys.stdout.write('LAST LINE\\n')\n"
        "import json; json.dump({'scores': {}}, open(sys.argv[2], 'w'))\n"
    )
    outcome = run(tmp_path, script(tmp_path, body), max_log=200_000)
    assert outcome.status == SubmissionStatus.COMPLETED
    log = (tmp_path / "evaluation.log").read_bytes()
    assert len(log) < 220_000
    assert b"FIRST LINE" in log and b"LAST LINE" in log and b"bytes of log omitted" in log


def test_cancellation_stops_the_evaluator(tmp_path: Path) -> None:
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    deadline = time.monotonic() + 0.5
    with (
        ev.LogSink(tmp_path / "evaluation.log", max_bytes=10_000) as sink,
        pytest.raises(ev.Cancelled, match="lease lost"),
    ):
        ev.run_command(
            facts=FACTS,
            command=script(tmp_path, "import time; time.sleep(60)"),
            unpacked=unpacked,
            workdir=tmp_path / "work",
            timeout=60,
            log=sink,
            cancelled=lambda: "lease lost" if time.monotonic() > deadline else None,
        )


def test_scores_evaluator_validates_and_stamps(tmp_path: Path) -> None:
    unpacked = tmp_path / "u"
    (unpacked / "scores").mkdir(parents=True)
    entry = {"submission_id": "forged", "submitted_by": "mallory", "scores": {"a": 1}}
    (unpacked / "scores" / "leaderboard.json").write_text(json.dumps(entry))
    with ev.LogSink(tmp_path / "log", max_bytes=10_000) as sink:
        outcome = ev.run_scores(
            facts=FACTS, unpacked=unpacked, leaderboard_paths=["scores/other.json"], log=sink
        )
    assert outcome.status == SubmissionStatus.COMPLETED
    stamped = outcome.entries["scores/leaderboard.json"]
    assert stamped["submitted_by"] == "ada" and stamped["submission_id"] == "sub123"
    assert "scores/other.json" not in outcome.entries


@pytest.mark.parametrize(
    ("content", "path", "reason"),
    [
        ("not json", "scores/leaderboard.json", entries.ENTRY_NOT_JSON),
        ("[1, 2]", "scores/leaderboard.json", entries.ENTRY_NOT_OBJECT),
        ('{"scores": 3}', "scores/leaderboard.json", entries.ENTRY_NO_SCORES),
        (None, "scores/leaderboard.json", ev.ENTRY_MISSING),
        ("{}", "../outside.json", results.BAD_ENTRY_PATH),
        ("{}", "/etc/passwd", results.BAD_ENTRY_PATH),
    ],
)
def test_scores_evaluator_rejects_bad_entries(tmp_path: Path, content, path, reason) -> None:
    unpacked = tmp_path / "u"
    (unpacked / "scores").mkdir(parents=True)
    (tmp_path / "outside.json").write_text('{"scores": {}}')
    if content is not None:
        (unpacked / "scores" / "leaderboard.json").write_text(content)
    facts = results.SubmissionFacts(**{**FACTS.__dict__, "leaderboard_path": path})
    with ev.LogSink(tmp_path / "log", max_bytes=10_000) as sink:
        outcome = ev.run_scores(facts=facts, unpacked=unpacked, leaderboard_paths=[], log=sink)
    assert outcome.status == SubmissionStatus.INVALID
    assert reason in outcome.reason


# The evaluator starts a child and a daemon (double fork + setsid: out of its process group and
# session, orphaned), records the three pids, then waits.
TREE = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
read, write = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(write, str(os.getpid()).encode())
        time.sleep(600)
    os._exit(0)
daemon = int(os.read(read, 20))
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {child.pid} {daemon}")
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""

# A stand-in for the worker process: runs one command evaluation, as the worker does.
FAKE_WORKER = """
import sys
from pathlib import Path
from zerospeech_api.evaluation import evaluators as ev
from zerospeech_api.leaderboards import results
root = Path(sys.argv[1])
(root / "unpacked").mkdir()
facts = results.SubmissionFacts("s", "m", "b", "u", "2021-01-01", None, False, "")
with ev.LogSink(root / "evaluation.log", max_bytes=100_000) as sink:
    ev.run_command(facts=facts, command=sys.argv[2], unpacked=root / "unpacked",
                   workdir=root / "work", timeout=600, log=sink, cancelled=lambda: None)
"""


def test_kill_9_of_the_worker_kills_the_evaluators_whole_process_tree(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    command = f"{script(tmp_path, TREE)} {pid_file}"
    worker = subprocess.Popen([sys.executable, "-c", FAKE_WORKER, str(tmp_path), command])
    pids: list[int] = []
    try:
        wait_for(pid_file.exists, timeout=30, what="evaluator tree started")
        pids = [int(p) for p in pid_file.read_text().split()]
        assert all(process_alive(pid) for pid in pids)
        worker.kill()
        worker.wait(10)
        wait_for(
            lambda: not any(process_alive(pid) for pid in pids),
            timeout=15,
            what="evaluator, its child and the daemon it started all dead",
        )
    finally:
        worker.kill()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_full_disk_never_breaks_the_log_pump(tmp_path: Path) -> None:
    sink = ev.LogSink(Path("/dev/full"), max_bytes=10_000)  # every write: ENOSPC
    sink.line("first")
    sink.write(b"x" * 50_000)
    sink.close()
    assert sink.error is not None and sink.error.errno == errno.ENOSPC
    stopped = ev.LogSink(tmp_path / "fenced.log", max_bytes=10_000, guard=lambda: False)
    stopped.line("written after the lease was lost")
    stopped.close()
    assert (tmp_path / "fenced.log").read_bytes() == b""
