"""Bursts of concurrent authenticated requests from one token under `serve`, with an anonymous
reader alongside, on SQLite and PostgreSQL.

    python bench/bench_burst.py [--workers 2] [--sizes 40,100,200,500] [--backends sqlite,postgres]

For each backend and burst size N: N requests released at once (one connection each) from one
bearer token, reads (`GET /users/{u}/models/list`) then writes (`POST .../models/create`), while
one anonymous client repeats `GET /benchmarks/list` (reads and writes come from two users, so
the list read keeps its size). Printed per burst: answers (200 / 503 with
Retry-After / anything else, counted as errors: 500s, dropped connections, timeouts), p50 and
p99 of the 200s, and the anonymous reader's p99 and worst. Baselines measured in the same run:
the burst of 40 (the size the old code handled) and the anonymous reader on an idle server; the
ratios are against them. PostgreSQL runs on a throwaway cluster (tests/helpers/postgres.py).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    LoadResult,
    machine,
    print_table,
    start_serve,
    temp_folder,
)
from tests.helpers.burst import Call, Outcome, fire_burst
from tests.helpers.factories import bearer, make_user, model_info
from tests.helpers.postgres import PostgresCluster, pg_bin
from zerospeech_api.db.engine import Database
from zerospeech_api.settings import load_settings

ANONYMOUS = Call("GET", "/benchmarks/list")


def latencies(outcomes: list[Outcome], label: str) -> LoadResult:
    answered = [o.seconds for o in outcomes if o.status == 200]
    errors = sum(1 for o in outcomes if o.status not in (200, 503))
    return LoadResult(label, 1.0, answered, errors, len(outcomes))


def idle_anonymous_p99(url: str, count: int = 50) -> float:
    """The anonymous reader's p99 on the idle server, in ms (same client reuse as under load)."""
    seconds = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(count):
            start = time.perf_counter()
            client.get(ANONYMOUS.path).raise_for_status()
            seconds.append(time.perf_counter() - start)
    return LoadResult("idle", 1.0, seconds, 0, 1).percentile(99)


def token_for(env_file: Path) -> tuple[str, dict[str, str]]:
    settings = load_settings(env_file)
    db = Database(settings.database)
    try:
        user = make_user(db, settings, username=f"burst{uuid.uuid4().hex[:6]}")
        return user.username, bearer(db, settings, user)
    finally:
        db.dispose()


def run_backend(backend: str, url: str, args: argparse.Namespace) -> list[list[object]]:
    rows: list[list[object]] = []
    with temp_folder("zr-bench-burst-") as tmp:
        env = {"ZR_ARGON2_TIME_COST": "1", "ZR_ARGON2_MEMORY_KIB": "8192"}
        if url:
            env["ZR_DATABASE_URL"] = url
        server = start_serve(Path(tmp), workers=args.workers, env=env)
        try:
            # Reads and writes from two users, so the list read stays the same size.
            reader, reader_headers = token_for(server.env_file)
            writer, writer_headers = token_for(server.env_file)
            idle_p99 = idle_anonymous_p99(server.url)
            kinds = {
                "read": Call("GET", f"/users/{reader}/models/list", reader_headers),
                "write": Call(
                    "POST", f"/users/{writer}/models/create", writer_headers, json=model_info()
                ),
            }
            baseline: dict[str, float] = {}
            for size in args.sizes:
                for kind, call in kinds.items():
                    outcomes, anonymous = fire_burst(server.url, [call] * size, watch=ANONYMOUS)
                    statuses = Counter(o.status for o in outcomes)
                    burst = latencies(outcomes, kind)
                    anon = latencies(anonymous, "anonymous")
                    anon_worst = max((o.seconds for o in anonymous), default=float("nan"))
                    baseline.setdefault(kind, burst.percentile(99))
                    rows.append(
                        [
                            backend, kind, size, statuses[200], statuses[503], burst.errors,
                            burst.p50, burst.percentile(99),
                            burst.percentile(99) / baseline[kind],
                            len(anonymous), anon.errors + sum(o.status == 503 for o in anonymous),
                            anon.percentile(99), anon_worst * 1000, anon_worst * 1000 / idle_p99,
                        ]
                    )  # fmt: skip
            rows.append(
                [backend, "idle anon", 50, "", "", "", "", "", "", "", "", idle_p99, "", ""]
            )
        finally:
            server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sizes", default="40,100,200,500")
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    print(f"bench_burst: {machine()}, {args.workers} workers, default ZR_ limits")
    rows: list[list[object]] = []
    for backend in args.backends.split(","):
        if backend == "sqlite":
            rows += run_backend("sqlite", "", args)
            continue
        if pg_bin() is None:
            print("PostgreSQL is not installed: skipped")
            continue
        cluster = PostgresCluster()
        cluster.start()
        try:
            url = cluster.create_database(f"zr_bench_{uuid.uuid4().hex[:8]}")
            rows += run_backend("postgres", url, args)
        finally:
            cluster.stop()
    print_table(
        [
            "backend", "kind", "N", "200", "503", "errors", "p50 ms", "p99 ms", "p99/N=40",
            "anon n", "anon bad", "anon p99 ms", "anon worst ms", "worst/idle p99",
        ],
        rows,
    )  # fmt: skip
    print("errors: anything but 200 or 503 + Retry-After (500s, dropped connections, timeouts)")


if __name__ == "__main__":
    main()
