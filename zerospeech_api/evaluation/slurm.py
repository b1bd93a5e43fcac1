"""Slurm from the worker's side: the batch script, `sbatch`, `squeue`/`scontrol`, `scancel`.

Only the commands every Slurm installation has, and no accounting (`sacct` needs slurmdbd,
which many clusters, and the tests, do not run): the evaluator's exit code is written by the
batch script to a file in the job's folder on the shared data folder, and Slurm's own view
(state, reason, `ExitCode`) is read from `squeue` and `scontrol` while it still knows the job.

Jobs are submitted with `--export=NONE` (nothing of the worker's environment, so no `ZR_*`
setting or secret, reaches the job), `--no-requeue` (the platform decides about retries, never
Slurm behind its back), the name `zr-<submission id>` and a comment `zr:<job>:<claim>` that
ties the Slurm job to the row and attempt that submitted it, so leftovers can be found by name.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# Slurm states after which the job will never run again (squeue's long names).
ENDED = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)
TIMEOUT = "TIMEOUT"
COMMAND_SECONDS = 30.0  # a Slurm command that takes longer failed (leases wait meanwhile)
# Options the worker sets itself: an evaluator's --sbatch-args may not change them.
RESERVED = {
    "-J": "--job-name",
    "-o": "--output",
    "-e": "--error",
    "-t": "--time",
    "-D": "--chdir",
    "-a": "--array",
    "-W": "--wait",
    "-H": "--hold",
    "--parsable": "--parsable",
    "--wrap": "--wrap",
    "--export": "--export",
    "--comment": "--comment",
    "--requeue": "--requeue",
    "--no-requeue": "--no-requeue",
    "--wait": "--wait",
    "--hold": "--hold",
    "--array": "--array",
    "--job-name": "--job-name",
    "--output": "--output",
    "--error": "--error",
    "--time": "--time",
    "--chdir": "--chdir",
    "--input": "--input",
    "-i": "--input",
}
INVALID_ID = "Invalid job id"  # how squeue, scontrol and scancel say "no such job"
EXIT_FILE = "exit_code"
SCRIPT_FILE = "slurm.sh"
OUTPUT_FILE = "slurm.out"


class SlurmError(Exception):
    """A Slurm command failed or could not run; the message says which and why."""


def job_name(submission_id: str) -> str:
    """The Slurm job name of a submission's evaluation."""
    return f"zr-{submission_id}"


def job_comment(job_id: int, claim: int) -> str:
    """The comment that ties a Slurm job to the evaluation job and claim that submitted it."""
    return f"zr:{job_id}:{claim}"


def time_limit_minutes(seconds: float) -> int:
    """Slurm counts time limits in whole minutes: the evaluator's timeout, rounded up."""
    return max(1, math.ceil(seconds / 60))


def parse_sbatch_args(text: str) -> list[str]:
    """The extra sbatch options of an evaluator; ValueError naming what is wrong."""
    try:
        args = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"--sbatch-args cannot be parsed: {exc}") from None
    for arg in args:
        if not arg.startswith("-"):
            continue  # the value of the option before it
        option = arg.split("=", 1)[0]
        short = option[:2] if not option.startswith("--") else option
        if option in RESERVED or short in RESERVED:
            name = RESERVED.get(option) or RESERVED[short]
            raise ValueError(
                f"--sbatch-args may not set {name}: the worker sets it itself (job name, "
                "output, time limit from --timeout, folder, environment, requeue)"
            )
    return args


def batch_script(*, argv: list[str], workdir: Path, run_dir: Path, env: Mapping[str, str]) -> str:
    """The job's shell script: run the evaluator in `workdir`, then record its exit code
    atomically in `run_dir` (the worker's only source for it: no accounting)."""
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    exit_file = shlex.quote(str(run_dir / EXIT_FILE))
    partial = shlex.quote(str(run_dir / f"{EXIT_FILE}.partial"))
    return (
        "#!/bin/sh\n"
        "# Written by zerospeech-api: one evaluation, submitted with sbatch.\n"
        f"export {exports}\n"
        f"cd {shlex.quote(str(workdir))} || exit 127\n"
        f"{shlex.join(argv)}\n"
        "code=$?\n"
        f"printf '%s\\n' \"$code\" > {partial} && mv -f {partial} {exit_file}\n"
        'exit "$code"\n'
    )


def read_exit_code(run_dir: Path) -> int | None:
    """The evaluator's exit code as the batch script recorded it, None if it did not."""
    try:
        return int((run_dir / EXIT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class JobInfo:
    """Slurm's view of one job."""

    job_id: str
    state: str
    reason: str = ""
    comment: str = ""
    exit_code: int | None = None  # from scontrol's `ExitCode=N:S`, when read from there

    @property
    def ended(self) -> bool:
        return self.state in ENDED


class Slurm:
    """Runs the Slurm client commands (found on PATH) with a timeout each."""

    def __init__(self, *, timeout: float = COMMAND_SECONDS) -> None:
        self.timeout = timeout

    def _run(self, argv: list[str]) -> str:
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlurmError(f"{argv[0]} could not run: {exc}") from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise SlurmError(f"{argv[0]} failed: {' '.join(detail[-3:]) or done.returncode}")
        return done.stdout

    def submit(
        self,
        *,
        script: Path,
        name: str,
        comment: str,
        output: Path,
        workdir: Path,
        minutes: int,
        extra: list[str],
    ) -> str:
        """Submit the batch script without waiting; returns the Slurm job id."""
        out = self._run(
            [
                "sbatch",
                "--parsable",
                f"--job-name={name}",
                f"--comment={comment}",
                f"--output={output}",
                f"--chdir={workdir}",
                f"--time={minutes}",
                "--export=NONE",
                "--no-requeue",
                *extra,
                str(script),
            ]
        )
        job_id = out.strip().split(";", 1)[0]  # `id;cluster` on a federation
        if not job_id.isdigit():
            raise SlurmError(f"sbatch answered no job id: {out.strip()!r}")
        return job_id

    def queue(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        """The jobs Slurm still knows among these (any state); the others were forgotten."""
        ids = sorted(set(job_ids), key=int)
        if not ids:
            return {}
        try:
            out = self._run(
                ["squeue", "--noheader", "--states=all", f"--jobs={','.join(ids)}",
                 "--format=%i|%T|%r"]
            )  # fmt: skip
        except SlurmError as exc:
            if INVALID_ID in str(exc):  # none of them is known any more
                return {}
            raise
        found = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[0] in ids:
                found[parts[0]] = JobInfo(parts[0], parts[1], parts[2])
        return found

    def named(self, name: str) -> list[JobInfo]:
        """Every job Slurm knows with this name, with its comment."""
        out = self._run(
            ["squeue", "--noheader", "--states=all", f"--name={name}", "--format=%i|%T|%k"]
        )
        jobs = []
        for line in out.splitlines():
            parts = line.strip().split("|", 2)
            if len(parts) == 3:
                jobs.append(JobInfo(parts[0], parts[1], comment=parts[2]))
        return jobs

    def show(self, job_id: str) -> JobInfo | None:
        """`scontrol show job`: state, reason and exit code, None once Slurm forgot the job."""
        try:
            out = self._run(["scontrol", "--oneliner", "show", "job", job_id])
        except SlurmError as exc:
            if INVALID_ID in str(exc):
                return None
            raise
        values = dict(re.findall(r"(\w+)=(\S*)", out))
        code = values.get("ExitCode", "").split(":", 1)[0]
        return JobInfo(
            job_id,
            values.get("JobState", ""),
            values.get("Reason", ""),
            values.get("Comment", ""),
            int(code) if code.isdigit() else None,
        )

    def cancel(self, job_id: str) -> None:
        """`scancel`: a job that already ended is not an error."""
        try:
            self._run(["scancel", job_id])
        except SlurmError as exc:
            if INVALID_ID not in str(exc) and "already completed" not in str(exc):
                raise
