"""The built-in `scores` evaluator and the command evaluator (subprocess, timeout, clean env).

Both produce leaderboard entries keyed by where they came from (see leaderboards/results.py),
stamped with the server's own ids, dates and labels.
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from zerospeech_api.db.tables import SubmissionStatus
from zerospeech_api.leaderboards.entries import EntryError
from zerospeech_api.leaderboards.results import (
    BAD_ENTRY_PATH,
    COMMAND_OUTPUT,
    SubmissionFacts,
    read_entry_file,
    stamp,
)
from zerospeech_api.submissions.archive import UnpackError, safe_member_path

CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
EX_DATAERR = 65  # a command evaluator exits with this to say "the submission is invalid"
KILL_GRACE_SECONDS = 2.0

NO_SCORES = (
    "this benchmark publishes the scores sent with the submission, but the submission has none "
    "(has_scores is false or its leaderboard path is empty)"
)
ENTRY_MISSING = "leaderboard entry file not found in the archive"


class Cancelled(Exception):
    """The evaluation was stopped from outside (lease lost or worker stopping)."""


@dataclass
class Outcome:
    """The result of one evaluation."""

    status: SubmissionStatus
    reason: str
    exit_code: int | None = None
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)


# --- entries ------------------------------------------------------------------------------


def resolve_inside(folder: Path, relative: str) -> Path:
    """`folder/relative` if `relative` is a clean relative path that stays inside `folder`."""
    try:
        clean = safe_member_path(relative)
    except UnpackError:
        raise EntryError(f"{BAD_ENTRY_PATH}: {relative!r}") from None
    if str(clean) == ".":
        raise EntryError(f"{BAD_ENTRY_PATH}: {relative!r}")
    target = folder / clean
    if not target.resolve().is_relative_to(folder.resolve()):
        raise EntryError(f"{BAD_ENTRY_PATH}: {relative!r}")
    return target


# --- the scores evaluator -----------------------------------------------------------------


def run_scores(
    *, facts: SubmissionFacts, unpacked: Path, leaderboard_paths: list[str], log: LogSink
) -> Outcome:
    """Validate and stamp the participant's entry, plus those other leaderboards read."""
    if not facts.has_scores or not facts.leaderboard_path:
        return Outcome(SubmissionStatus.INVALID, NO_SCORES)
    primary = facts.leaderboard_path
    entries: dict[str, dict[str, Any]] = {}
    for path in [primary, *(p for p in dict.fromkeys(leaderboard_paths) if p != primary)]:
        try:
            target = resolve_inside(unpacked, path)
            if not target.is_file():
                if path == primary:
                    raise EntryError(f"{ENTRY_MISSING}: {path}")
                log.line(f"no entry at {path}: not published on the leaderboards reading it")
                continue
            entries[path] = stamp(read_entry_file(target), facts)
        except EntryError as exc:
            log.line(f"{path}: {exc}")
            return Outcome(SubmissionStatus.INVALID, f"{path}: {exc}")
        log.line(f"{path}: valid entry with {len(entries[path]['scores'])} score group(s)")
    return Outcome(SubmissionStatus.COMPLETED, "scores validated and published", entries=entries)


# --- the command evaluator ----------------------------------------------------------------


def build_argv(command: str, *, input_dir: Path, output_file: Path) -> list[str]:
    """The evaluator's argv: `{input}`/`{output}` replaced, else both appended in that order."""
    argv = shlex.split(command)
    if not argv:
        raise ValueError("empty evaluator command")
    placeholders = any("{input}" in a or "{output}" in a for a in argv)
    argv = [
        a.replace("{input}", str(input_dir)).replace("{output}", str(output_file)) for a in argv
    ]
    if not placeholders:
        argv += [str(input_dir), str(output_file)]
    return argv


NOT_STARTED = 127


@functools.cache
def _supervisor_source() -> str:
    # Read as a resource so it also works from the zipped pyz.
    return resources.files(__package__).joinpath("supervisor.py").read_text(encoding="utf-8")


def supervised(argv: list[str]) -> list[str]:
    """`argv` run under evaluation/supervisor.py: none of its processes outlives the worker."""
    grace = f"{KILL_GRACE_SECONDS:g}"
    return [sys.executable, "-I", "-S", "-c", _supervisor_source(), grace, *argv]


def clean_env(*, workdir: Path, facts: SubmissionFacts) -> dict[str, str]:
    """A minimal environment: no ZR_* settings, no secrets, no inherited variables."""
    return {
        "PATH": CLEAN_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "SUBMISSION_ID": facts.submission_id,
        "BENCHMARK_ID": facts.benchmark_id,
    }


class LogSink:
    """Writes an evaluation log to disk in bounded memory and bounded size.

    The first part is written as it arrives (readable while the evaluator runs); once the cap is
    reached only the last `tail_bytes` are kept in memory and appended at the end, after a note
    saying how much was left out. Nothing is written while `guard()` is false (the worker lost
    its lease). A write error never raises (the output pump must keep draining the evaluator's
    pipe): writing stops and `error` keeps the first one (ENOSPC: the disk is full).
    """

    def __init__(
        self, path: Path, *, max_bytes: int, guard: Callable[[], bool] | None = None
    ) -> None:
        self.path = path
        self.tail_bytes = max(1024, min(1_000_000, max_bytes // 4))
        self.head_bytes = max(0, max_bytes - self.tail_bytes)
        self.written = 0
        self.omitted = 0
        self.total = 0
        self.error: OSError | None = None
        self._guard = guard or (lambda: True)
        self._tail = bytearray()
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")

    def _put(self, data: bytes) -> None:
        if self.error is not None or not self._guard():
            return
        try:
            self._file.write(data)
            self._file.flush()
        except OSError as exc:
            self.error = exc

    def write(self, data: bytes) -> None:
        with self._lock:
            self.total += len(data)
            room = self.head_bytes - self.written
            if room > 0:
                head, data = data[:room], data[room:]
                self._put(head)
                self.written += len(head)
            if data:
                self._tail += data
                if len(self._tail) > 2 * self.tail_bytes:
                    cut = len(self._tail) - self.tail_bytes
                    self.omitted += cut
                    del self._tail[:cut]

    def line(self, text: str) -> None:
        stamp_ = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.write(f"[{stamp_}] {text}\n".encode())

    def __enter__(self) -> LogSink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Write the kept tail and close the file (idempotent)."""
        with self._lock:
            if self._file.closed:
                return
            if len(self._tail) > self.tail_bytes:
                cut = len(self._tail) - self.tail_bytes
                self.omitted += cut
                del self._tail[:cut]
            if self.omitted:
                self._put(f"\n[... {self.omitted} bytes of log omitted ...]\n".encode())
            self._put(bytes(self._tail))
            self._tail.clear()
            try:
                self._file.close()
            except OSError as exc:
                self.error = self.error or exc


def _pump(stream: Any, sink: LogSink) -> None:
    fd = stream.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        sink.write(chunk)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Ask the supervisor to stop the evaluator (SIGTERM, SIGKILL after the grace) and wait."""
    proc.terminate()
    try:
        proc.wait(KILL_GRACE_SECONDS + 10)
    except subprocess.TimeoutExpired:  # never seen: the supervisor is a few lines of stdlib
        proc.kill()
        proc.wait()


def _wait(
    proc: subprocess.Popen[bytes],
    log: LogSink,
    timeout: float,
    cancelled: Callable[[], str | None],
) -> tuple[str | None, bool]:
    """Pump the output to the log until the evaluator ends; (stop reason, timed out)."""
    pump = threading.Thread(target=_pump, args=(proc.stdout, log), daemon=True)
    pump.start()
    deadline = time.monotonic() + timeout
    stop_reason: str | None = None
    timed_out = False
    while True:
        try:
            proc.wait(0.1)
            break
        except subprocess.TimeoutExpired:
            pass
        stop_reason = cancelled()
        if stop_reason or time.monotonic() > deadline:
            timed_out = stop_reason is None
            _stop(proc)
            break
    pump.join(10)  # the supervisor killed every holder of the pipe; never wait forever anyway
    if proc.stdout is not None:
        proc.stdout.close()
    return stop_reason, timed_out


def run_command(
    *,
    facts: SubmissionFacts,
    command: str,
    unpacked: Path,
    workdir: Path,
    timeout: float,
    log: LogSink,
    cancelled: Callable[[], str | None],
) -> Outcome:
    """Run the evaluator on the unpacked folder; its output file is the entry.

    `cancelled()` returns a reason when the run must stop (the process group is killed and
    `Cancelled` raised). Exit code 0 with a valid entry: completed; 65: invalid; else failed.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    output = workdir / "entry.json"
    output.unlink(missing_ok=True)
    argv = build_argv(command, input_dir=unpacked, output_file=output)
    log.line(f"running {shlex.join(argv)} (timeout {timeout:g} s)")
    # The supervisor watches the read end; only this process holds the write end (not
    # inheritable), so the kernel closes it when the worker dies, even by SIGKILL.
    watch, held = os.pipe()
    try:
        proc = subprocess.Popen(
            supervised(argv),
            stdin=watch,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=unpacked,
            env=clean_env(workdir=workdir, facts=facts),
            start_new_session=True,  # a signal to the worker's group does not reach it
        )
    except OSError as exc:
        os.close(held)
        reason = f"evaluator could not start: {type(exc).__name__}: {exc.strerror or exc}"
        log.line(reason)
        return Outcome(SubmissionStatus.FAILED, reason)
    finally:
        os.close(watch)
    try:
        stop_reason, timed_out = _wait(proc, log, timeout, cancelled)
    finally:
        os.close(held)  # if anything of the evaluator is still running, it is killed now
    code = proc.returncode
    if stop_reason:
        log.line(f"stopped: {stop_reason}")
        raise Cancelled(stop_reason)
    if timed_out:
        return timed_out_outcome(timeout, exit_code=code, log=log)
    return command_outcome(code=code, output=output, facts=facts, log=log)


def timed_out_outcome(timeout: float, *, exit_code: int | None, log: LogSink) -> Outcome:
    """A command evaluator that ran out of time (any runner): failed, the platform's fault."""
    reason = f"evaluator timed out after {timeout:g} s and was killed"
    log.line(reason)
    return Outcome(SubmissionStatus.FAILED, reason, exit_code=exit_code)


def command_outcome(*, code: int, output: Path, facts: SubmissionFacts, log: LogSink) -> Outcome:
    """What a command evaluator's exit code and entry file mean (any runner): 0 with a valid
    entry is completed, 65 invalid, anything else failed."""
    log.line(f"evaluator exited with code {code}")
    if code == NOT_STARTED:
        return Outcome(
            SubmissionStatus.FAILED,
            "evaluator could not start (exit code 127: see the log)",
            exit_code=code,
        )
    if code == EX_DATAERR:
        return Outcome(
            SubmissionStatus.INVALID,
            f"the evaluator rejected the submission (exit code {code})",
            exit_code=code,
        )
    if code != 0:
        return Outcome(
            SubmissionStatus.FAILED, f"evaluator failed with exit code {code}", exit_code=code
        )
    if not output.is_file():
        return Outcome(
            SubmissionStatus.FAILED, "evaluator exited 0 but wrote no entry file", exit_code=code
        )
    try:
        entry = read_entry_file(output)
    except EntryError as exc:
        return Outcome(SubmissionStatus.FAILED, f"evaluator output: {exc}", exit_code=code)
    return Outcome(
        SubmissionStatus.COMPLETED,
        "evaluated",
        exit_code=code,
        entries={COMMAND_OUTPUT: stamp(entry, facts)},
    )
