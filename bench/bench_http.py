"""uvicorn's HTTP parser: httptools against h11 (both on asyncio), in one run.

    python bench/bench_http.py [--rounds 5] [--seconds 3] [--concurrency 8] [--upload-mib 64]
    python bench/bench_http.py --candidate MODULE.WORKERCLASS   (e.g. a uvloop worker)

Two `serve` instances with the same settings, data and gunicorn options (2 workers, keep-alive,
access log), differing only in the worker class: the baseline `uvicorn_worker.UvicornH11Worker`
(`--http h11 --loop asyncio`, what uvicorn ran before httptools was a dependency) and the
product's own worker class (httptools on asyncio; uvloop was measured too, and left out: see
zerospeech_api/appliance/http_impl.py). The bench checks in /proc/<pid>/maps that the
candidate's workers really loaded httptools and the baseline's did not. Cases, in interleaved
rounds (the order of the two servers alternates):

- GET / (the smallest JSON answer: middleware, routing, serialisation);
- GET /leaderboards/{label}/json, 100 entries (a cached JSON read of ~60 kB);
- an upload of --upload-mib MiB in zrc-sized parts (content/add: multipart parsing, hashing,
  fsync, database), timed from the first part to the last answer.

Reported: medians of req/s (or MB/s) and of the servers' CPU per request (ms, all processes of
the server; unlike req/s it hardly moves with other load on the machine), and the ratios
candidate / baseline (throughput; > 1 is better) and baseline / candidate (CPU; > 1 is better).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_appliance import leaderboard_document
from bench_upload import Uploader, make_parts
from harness import (
    Request,
    Server,
    cli,
    machine,
    median,
    print_table,
    run_load,
    start_serve,
    temp_folder,
)

from tests.helpers.processes import HTTPTOOLS_SO, worker_maps
from zerospeech_api.appliance.gunicorn_app import WORKER_CLASS

BASELINE_CLASS = "uvicorn_worker.UvicornH11Worker"
BOARD = "bench-board"
# The shared objects that only a process running httptools has mapped.
FAST_MODULES = (HTTPTOOLS_SO,)


def check_implementation(server: Server, *, fast: bool) -> None:
    """Exit unless every worker of `server` runs (fast) or does not run httptools."""
    maps = worker_maps(server.process.proc.pid)
    if not maps:
        raise SystemExit(f"{server.name}: no worker process found")
    for text in maps:
        loaded = [module for module in FAST_MODULES if module in text]
        if fast and len(loaded) != len(FAST_MODULES):
            raise SystemExit(f"{server.name}: a worker runs without httptools: {loaded}")
        if not fast and loaded:
            raise SystemExit(f"{server.name}: the baseline loaded {loaded}")


def prepare(folder: Path, worker_class: str, workers: int) -> tuple[Server, Uploader]:
    """`serve` over its own data folder, with the benchmark leaderboard, and an uploader."""
    folder.mkdir()
    server = start_serve(
        folder,
        workers=workers,
        env={"ZR_LOG_LEVEL": "warning", "ZR_WORKER_PROCESSES": "0"},
        args=["--worker-class", worker_class],
    )
    server.name = worker_class.rsplit(".", 1)[-1]
    env_file = server.env_file
    cli(env_file, "benchmarks", "create", "bench-b", "--label", "Bench", "--url",
        "https://example.org")  # fmt: skip
    cli(env_file, "leaderboards", "create", BOARD, "--benchmark", "bench-b", "--sort-key",
        "scores.lexical.all.test")  # fmt: skip
    document = folder / "historic.json"
    document.write_text(json.dumps(leaderboard_document()))
    cli(env_file, "leaderboards", "import", BOARD, str(document))
    return server, Uploader(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3, help="Per read case and round.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--upload-mib", type=int, default=64)
    parser.add_argument("--part-mib", type=int, default=16)
    parser.add_argument("--candidate", default=WORKER_CLASS, help="Worker class to compare.")
    args = parser.parse_args()

    with temp_folder("zr-bench-http-") as tmp:
        root = Path(tmp)
        total = args.upload_mib << 20
        index, md5 = make_parts(root / "parts", total, args.part_mib << 20)
        servers: dict[str, Server] = {}
        uploaders: dict[str, Uploader] = {}
        try:
            for name, worker_class in (("baseline", BASELINE_CLASS), ("candidate", args.candidate)):
                servers[name], uploaders[name] = prepare(root / name, worker_class, args.workers)
            check_implementation(servers["baseline"], fast=False)
            check_implementation(servers["candidate"], fast=True)
            cases = {"GET /": "/", "leaderboard json": f"/leaderboards/{BOARD}/json"}
            # (throughput, server CPU ms per request) per case, server and round
            samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for server in servers.values():  # warm-up: every worker has answered each case
                for path in cases.values():
                    run_load(server.url, Request("GET", path), seconds=1, concurrency=4)
            for n in range(args.rounds):
                order = list(servers) if n % 2 == 0 else list(servers)[::-1]
                for case, path in cases.items():
                    for name in order:
                        server = servers[name]
                        result = run_load(
                            server.url, Request("GET", path), seconds=args.seconds,
                            concurrency=args.concurrency, server=server,
                        )  # fmt: skip
                        if result.errors:
                            raise SystemExit(f"{name} {case}: {result.errors} failed requests")
                        samples.setdefault((case, name), []).append(
                            (result.rps, result.cpu_ms_per_request)
                        )
                for name in order:
                    server = servers[name]
                    os.sync()  # each upload starts without the previous one's dirty pages
                    cpu = server.cpu_seconds()
                    sent, _joined = uploaders[name].upload(root / "parts", index, md5)
                    cpu = server.cpu_seconds() - cpu
                    samples.setdefault(("upload", name), []).append(
                        (total / 1e6 / sent, cpu * 1000 / len(index))
                    )
            check_implementation(servers["candidate"], fast=True)
        finally:
            for uploader in uploaders.values():
                uploader.close()
            for server in servers.values():
                server.stop()

    print(
        f"\n# uvicorn implementations, {machine()}: {args.workers} workers, {args.rounds} "
        f"interleaved rounds (medians); reads {args.concurrency} concurrent x {args.seconds:g} s, "
        f"upload {args.upload_mib} MiB in {len(index)} parts"
    )
    print(f"baseline: {BASELINE_CLASS} (h11, asyncio); candidate: {args.candidate}")
    rows = []
    for case in (*cases, "upload"):
        unit = "MB/s" if case == "upload" else "req/s"
        base = samples[(case, "baseline")]
        cand = samples[(case, "candidate")]
        base_rate, cand_rate = median([s[0] for s in base]), median([s[0] for s in cand])
        base_cpu, cand_cpu = median([s[1] for s in base]), median([s[1] for s in cand])
        per_round = [c[0] / b[0] for b, c in zip(base, cand, strict=True)]
        rows.append(
            [case, unit, base_rate, cand_rate, cand_rate / base_rate, median(per_round),
             base_cpu, cand_cpu, base_cpu / cand_cpu]
        )  # fmt: skip
    print_table(
        ["case", "unit", "h11", "httptools", "ratio", "ratio/round", "h11 CPU ms",
         "httptools CPU ms", "CPU ratio"],
        rows,
    )  # fmt: skip
    print("(ratio: candidate / baseline throughput, medians; ratio/round: median of the per-round")
    print(" ratios; CPU ms: server CPU per request, or per upload part; CPU ratio: baseline /")
    print(" candidate, > 1 means the candidate needs less CPU for the same work)")


if __name__ == "__main__":
    main()
