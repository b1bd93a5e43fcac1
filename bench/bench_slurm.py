"""Evaluation throughput of many short jobs through ONE worker: the local runner (baseline)
against the slurm runner, in the same run, on a throwaway single-node Slurm.

    python bench/bench_slurm.py [--jobs 40] [--max-in-flight 16] [--poll 0.5]

Each run queues `--jobs` submissions whose evaluator only writes its entry (`sh -c printf`),
then runs one `worker --once` over them (it exits when none is left and, on Slurm, none is in
flight). Printed per runner: wall time of the worker, jobs/s from the first claim to the last
job's end, the ratio against the local runner, and the most Slurm jobs the worker had in flight
(from its log). The Slurm cluster is the tests' (tests/helpers/slurm.py): one node of 2 CPUs
that runs up to 8 jobs at once, so Slurm's own scheduling and job start-up (about a second per
job here) are what the slurm runner pays; on a real cluster jobs are long and many nodes run
them, and one worker process keeps `ZR_SLURM_MAX_IN_FLIGHT` of them going.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import clean_env, machine, print_table, temp_folder
from tests.helpers.factories import make_benchmark, make_submission, make_user, zip_bytes
from tests.helpers.processes import Process, cli_command
from tests.helpers.server import Site
from tests.helpers.slurm import SlurmCluster, missing_binaries
from zerospeech_api.db.tables import Job
from zerospeech_api.evaluation import registry

# Writes a valid entry and exits: the evaluation itself costs nothing, the runner everything.
COMMAND = """/bin/sh -c 'printf "{\\"scores\\": {\\"v\\": 1}}" > "$0"' {output}"""


def queue(site: Site, runner: str, jobs: int) -> list[str]:
    """An evaluator on `runner`, an auto-evaluated benchmark and `jobs` uploaded submissions."""
    with site.db.transaction() as session:
        registry.create_evaluator(
            session=session,
            name=f"true-{runner}",
            command=COMMAND,
            runner=runner,
            timeout_seconds=60,
        )
    bench = make_benchmark(site.db, f"bench-{runner}", evaluator=f"true-{runner}")
    user = make_user(site.db, site.settings)
    archive = zip_bytes({"params.yaml": "x: 1\n"})
    return [
        make_submission(
            site.db,
            site.settings,
            user,
            benchmark_id=bench,
            archive=archive,
            has_scores=False,
            leaderboard_path="",
        )  # fmt: skip
        for _ in range(jobs)
    ]


def run(site: Site, runner: str, jobs: int, env: dict[str, str]) -> dict[str, object]:
    ids = queue(site, runner, jobs)
    started = time.monotonic()
    worker = Process(
        [*cli_command(), "--env-file", str(site.env_file), "worker", "--once"],
        cwd=site.root,
        env={**clean_env(), **env},
        log=site.root / f"worker-{runner}.log",
    )
    try:
        worker.proc.wait(600)
    finally:
        worker.stop()
    wall = time.monotonic() - started
    with site.db.session(read_only=True) as session:
        rows = session.query(Job).filter(Job.submission_id.in_(ids)).all()
    done = [j for j in rows if j.state == "done"]
    if len(done) != jobs:
        raise SystemExit(f"{runner}: {len(done)}/{jobs} completed:\n{worker.output()[-3000:]}")
    first = min(j.started_at for j in rows if j.started_at)
    last = max(j.finished_at for j in rows if j.finished_at)
    span = (last - first).total_seconds()
    in_flight = [int(m) for m in re.findall(r"\((\d+) in flight\)", worker.output())]
    return {
        "runner": runner,
        "jobs": jobs,
        "wall": wall,
        "span": span,
        "rate": jobs / span,
        "in_flight": max(in_flight, default=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--max-in-flight", type=int, default=16)
    parser.add_argument("--poll", type=float, default=0.5, help="ZR_SLURM_POLL_SECONDS")
    args = parser.parse_args()
    if missing_binaries():
        raise SystemExit(f"Slurm is not installed: {', '.join(missing_binaries())}")
    print(f"bench_slurm: {args.jobs} short jobs through one worker; {machine()}")
    slurm = SlurmCluster()
    slurm.start()
    try:
        with temp_folder("zr-bench-slurm-") as folder:
            site = Site(
                Path(folder),
                {
                    "ZR_WORKER_POLL_SECONDS": "0.1",
                    "ZR_SLURM_POLL_SECONDS": str(args.poll),
                    "ZR_SLURM_MAX_IN_FLIGHT": str(args.max_in_flight),
                },
            )
            try:
                local = run(site, "local", args.jobs, {})
                on_slurm = run(site, "slurm", args.jobs, slurm.env)
            finally:
                site.close()
    finally:
        slurm.stop()
    rows = [
        [
            r["runner"],
            r["jobs"],
            r["wall"],
            r["span"],
            r["rate"],
            float(r["rate"]) / float(local["rate"]),  # type: ignore[arg-type]
            r["in_flight"] if r["runner"] == "slurm" else "-",
        ]
        for r in (local, on_slurm)
    ]
    print_table(
        ["runner", "jobs", "worker s", "first claim->last end s", "jobs/s", "x local",
         "max Slurm jobs in flight"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
