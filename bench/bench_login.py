"""Login throughput and latency under `serve`, and GET / against a bare FastAPI app, one run.

    python bench/bench_login.py [--workers 4] [--seconds 8] [--concurrency 8]

- argon2id cost: one hash with the default Settings parameters, in this process (reference).
- POST /auth/login (the zrc form) under `serve` with the default hashing parameters: one client
  (latency of a lone login), then `--concurrency` clients (throughput, p50/p95).
- GET / under `serve` vs the bare app (bench/bare_app.py) on gunicorn with the same worker class
  and count, interleaved rounds, median kept: the ratio serve / bare is the figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    LoadResult,
    Request,
    best_of,
    cli,
    machine,
    print_table,
    run_load,
    start_gunicorn,
    start_serve,
    temp_folder,
)
from zerospeech_api.security.passwords import hash_password, hasher, verify_password
from zerospeech_api.settings import Settings

USERNAME = "bench"
PASSWORD = "bench password 123"


def argon2_ms(settings: Settings, rounds: int = 10) -> float:
    """Median wall time of one verify with the given parameters, in milliseconds."""
    ph = hasher(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    stored = hash_password(ph, PASSWORD)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        assert verify_password(ph, stored, PASSWORD)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="GET / rounds per server")
    args = parser.parse_args()

    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    params = (
        f"argon2id t={defaults.argon2_time_cost} m={defaults.argon2_memory_kib} KiB "
        f"p={defaults.argon2_parallelism}"
    )
    print(f"bench_login: {machine()}, {args.workers} workers, {params}")
    hash_ms = argon2_ms(defaults)

    login = Request(
        "POST",
        "/auth/login",
        data={
            "grant_type": "password",
            "username": USERNAME,
            "password": PASSWORD,
            "client_id": "zrc",
            "client_secret": "zrc",
        },
    )
    index = Request("GET", "/")
    with temp_folder("zr-bench-serve-") as serve_dir, temp_folder("zr-bench-bare-") as bare_dir:
        serve = start_serve(Path(serve_dir), workers=args.workers, env={"ZR_LOG_LEVEL": "warning"})
        bare = start_gunicorn("bare_app:app", folder=Path(bare_dir), workers=args.workers)
        try:
            cli(
                serve.env_file, "users", "create", USERNAME, "--email",
                "bench@example.org", "--first-name", "B", "--last-name", "B", "--affiliation",
                "B", "--verified", "--password-stdin", input=PASSWORD + "\n",
            )  # fmt: skip
            run_load(serve.url, login, seconds=1, concurrency=2)  # warm-up
            lone = run_load(serve.url, login, seconds=args.seconds / 2, concurrency=1, server=serve)
            loaded = run_load(
                serve.url, login, seconds=args.seconds, concurrency=args.concurrency, server=serve
            )
            ours: list[LoadResult] = []
            theirs: list[LoadResult] = []
            run_load(bare.url, index, seconds=1, concurrency=args.concurrency)  # warm-up
            for _ in range(args.rounds):
                for server, results in ((serve, ours), (bare, theirs)):
                    results.append(
                        run_load(
                            server.url,
                            index,
                            seconds=args.seconds / 2,
                            concurrency=args.concurrency,
                            server=server,
                        )
                    )
        finally:
            serve.stop()
            bare.stop()

    get_ours, get_bare = best_of(ours), best_of(theirs)
    rows: list[tuple[object, ...]] = [
        ("argon2id verify, in-process", 1, "", "", f"{hash_ms:.1f}", "", "", f"{hash_ms:.1f}")
    ]
    for name, result in (
        ("POST /auth/login (serve)", lone),
        ("POST /auth/login (serve)", loaded),
        ("GET / (serve)", get_ours),
        ("GET / (bare FastAPI)", get_bare),
    ):
        rows.append(
            (
                name,
                result.concurrency,
                result.count,
                result.errors,
                result.p50,
                result.p95,
                result.rps,
                result.cpu_ms_per_request,
            )
        )
    print_table(
        ["what", "conc", "requests", "errors", "p50 ms", "p95 ms", "req/s", "server CPU ms/req"],
        rows,
    )
    print()
    print(
        f"GET / serve/bare: throughput {get_ours.rps / get_bare.rps:.2f}, "
        f"server CPU per request {get_ours.cpu_ms_per_request / get_bare.cpu_ms_per_request:.2f}"
    )
    print(
        f"login: server CPU per login / argon2 verify {loaded.cpu_ms_per_request / hash_ms:.2f}; "
        f"capacity if the server had both cores ~{2000 / loaded.cpu_ms_per_request:.0f} logins/s"
        if (os.cpu_count() or 1) >= 2
        else ""
    )
    if loaded.errors or lone.errors or get_ours.errors or get_bare.errors:
        raise SystemExit("errors during the run")


if __name__ == "__main__":
    main()
