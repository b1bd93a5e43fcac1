"""The scores and command evaluators on real files and real subprocesses."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from zerospeech_api.db.tables import SubmissionStatus
from zerospeech_api.evaluation import evaluators as ev

FACTS = ev.SubmissionFacts(
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
    entry = outcome.entries[ev.COMMAND_OUTPUT]
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
        ("not json", "scores/leaderboard.json", ev.ENTRY_NOT_JSON),
        ("[1, 2]", "scores/leaderboard.json", ev.ENTRY_NOT_OBJECT),
        ('{"scores": 3}', "scores/leaderboard.json", ev.ENTRY_NO_SCORES),
        (None, "scores/leaderboard.json", ev.ENTRY_MISSING),
        ("{}", "../outside.json", ev.BAD_ENTRY_PATH),
        ("{}", "/etc/passwd", ev.BAD_ENTRY_PATH),
    ],
)
def test_scores_evaluator_rejects_bad_entries(tmp_path: Path, content, path, reason) -> None:
    unpacked = tmp_path / "u"
    (unpacked / "scores").mkdir(parents=True)
    (tmp_path / "outside.json").write_text('{"scores": {}}')
    if content is not None:
        (unpacked / "scores" / "leaderboard.json").write_text(content)
    facts = ev.SubmissionFacts(**{**FACTS.__dict__, "leaderboard_path": path})
    with ev.LogSink(tmp_path / "log", max_bytes=10_000) as sink:
        outcome = ev.run_scores(facts=facts, unpacked=unpacked, leaderboard_paths=[], log=sink)
    assert outcome.status == SubmissionStatus.INVALID
    assert reason in outcome.reason
