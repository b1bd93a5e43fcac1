"""Metrics: what the metrics middleware costs on `GET /`, and what a scrape of /metrics costs.

    python bench/bench_metrics.py [--seconds 3] [--rounds 3] [--workers 2] [--concurrency 4]
                                  [--jobs 20000]

1. `GET /` from the real app with its metrics middleware (prometheus-client's multiprocess mode,
   as `serve` runs it) against the same app with the middleware taken out, both under the same
   gunicorn command line, interleaved rounds, median. Goal: >= 0.95 of the requests/s, and the
   server CPU per request of each.
2. One middleware observation in process (microseconds per request), in memory and with files.
3. A scrape: the database figures alone (read_figures, in process) and GET /metrics over HTTP,
   with `--jobs` finished jobs and as many submissions in the database.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    interleaved_rounds,
    machine,
    median,
    medians,
    print_table,
    start_gunicorn,
    start_serve,
    temp_folder,
)


def _app(*, metrics: bool):
    from zerospeech_api.app import create_configured_app
    from zerospeech_api.metrics.http import MetricsMiddleware

    app = create_configured_app()
    if not metrics:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not MetricsMiddleware]
    return app


def with_metrics():
    """The app as `serve` builds it."""
    return _app(metrics=True)


def without_metrics():
    """The same app without the metrics middleware (the baseline)."""
    return _app(metrics=False)


def populate(env_file: Path, jobs: int) -> None:
    """`jobs` submissions, each with a finished job, written in bulk."""
    import datetime as dt

    from sqlalchemy import insert

    from tests.helpers.factories import make_benchmark, make_model, make_user
    from zerospeech_api.db.engine import Database
    from zerospeech_api.db.tables import Job, JobState, Submission, SubmissionStatus, utcnow
    from zerospeech_api.settings import load_settings

    settings = load_settings(env_file)
    db = Database(settings.database)
    user = make_user(db, settings)
    benchmark = make_benchmark(db)
    model = make_model(db, user)
    now = utcnow()
    statuses = list(SubmissionStatus)
    with db.transaction() as session:
        session.execute(
            insert(Submission),
            [
                {
                    "id": f"sub{n:08d}", "user_id": user.id, "model_id": model,
                    "benchmark_id": benchmark, "filename": "s.zip", "archive_hash": "0" * 32,
                    "status": statuses[n % len(statuses)],
                }
                for n in range(jobs)
            ],
        )  # fmt: skip
        session.execute(
            insert(Job),
            [
                {
                    "submission_id": f"sub{n:08d}", "state": JobState.DONE,
                    "duration_seconds": float(n % 3600), "finished_at": now,
                    "created_at": now - dt.timedelta(seconds=n),
                }
                for n in range(jobs)
            ],
        )  # fmt: skip
    db.dispose()


def observe_cost(count: int = 200_000) -> dict[str, float]:
    """Microseconds per HttpMetrics.observe, in memory and in multiprocess mode (subprocess)."""
    import subprocess

    code = (
        "import time\n"
        "from zerospeech_api.metrics.http import HttpMetrics\n"
        "m = HttpMetrics()\n"
        f"start = time.perf_counter()\n"
        f"for n in range({count}): m.observe('GET', '/', 200, 0.001)\n"
        f"print((time.perf_counter() - start) / {count} * 1e6)\n"
    )
    costs = {}
    for mode in ("memory", "files"):
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        with tempfile.TemporaryDirectory() as folder:
            if mode == "files":
                env["PROMETHEUS_MULTIPROC_DIR"] = folder
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
        costs[mode] = float(out.stdout)
    return costs


def scrape_cost(env_file: Path, url: str, repeat: int = 20) -> dict[str, float]:
    """Milliseconds: the database figures alone (in process), and a whole GET /metrics."""
    from zerospeech_api.db.engine import Database
    from zerospeech_api.metrics.database import read_figures
    from zerospeech_api.settings import load_settings

    settings = load_settings(env_file)
    db = Database(settings.database)
    figures = []
    for _ in range(repeat):
        start = time.perf_counter()
        with db.session(read_only=True) as session:
            read_figures(session=session, settings=settings)
        figures.append(time.perf_counter() - start)
    db.dispose()
    scrapes = []
    for _ in range(repeat):
        start = time.perf_counter()
        assert httpx.get(f"{url}/metrics", timeout=60).status_code == 200
        scrapes.append(time.perf_counter() - start)
    size = len(httpx.get(f"{url}/metrics", timeout=60).content)
    return {
        "figures_ms": median(figures) * 1000,
        "scrape_ms": median(scrapes) * 1000,
        "scrape_kib": size / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args()
    print(f"bench_metrics on {machine()}; {args.workers} workers, {args.concurrency} concurrent")

    with temp_folder("zr-bench-metrics-") as tmp:
        folder = Path(tmp)
        settings_env = {"ZR_ARGON2_TIME_COST": "1", "ZR_ARGON2_MEMORY_KIB": "8192"}
        api = start_serve(folder, workers=args.workers, env=settings_env)
        env_file = api.env_file
        metrics_dir = folder / "multiproc"
        metrics_dir.mkdir()
        servers = {}
        try:
            for name, factory, extra in (
                ("with metrics", "bench_metrics:with_metrics()",
                 {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}),
                ("without metrics", "bench_metrics:without_metrics()", {}),
            ):  # fmt: skip
                servers[name] = start_gunicorn(
                    factory, folder=folder, workers=args.workers,
                    env={"ZR_ENV_FILE": str(env_file), **extra},
                )  # fmt: skip
            samples = interleaved_rounds(
                {name: (server.url, "/", server) for name, server in servers.items()},
                rounds=args.rounds, seconds=args.seconds, concurrency=args.concurrency,
            )  # fmt: skip
            populate(env_file, args.jobs)
            # Some traffic on several routes first, so the scrape has series to merge.
            for path in ("/", "/health", "/benchmarks/list", "/nope", "/users/x/profile"):
                for _ in range(20):
                    httpx.get(f"{api.url}{path}", timeout=60)
            scrape = scrape_cost(env_file, api.url)
        finally:
            for server in (*servers.values(), api):
                server.stop()

    rps, cpu = medians(samples)
    base = "without metrics"
    rows = [
        [name, rps[name], rps[name] / rps[base], cpu[name], cpu[name] / cpu[base]]
        for name in (base, "with metrics")
    ]
    print(f"\nGET /: {args.rounds} interleaved rounds of {args.seconds:g} s, median")
    print_table(["case", "req/s", "ratio", "server CPU ms/req", "CPU ratio"], rows)
    observe = observe_cost()
    print(
        f"\none observation: {observe['memory']:.1f} us in memory, "
        f"{observe['files']:.1f} us with multiprocess files"
    )
    print(
        f"scrape with {args.jobs} submissions and jobs: database figures "
        f"{scrape['figures_ms']:.1f} ms, GET /metrics {scrape['scrape_ms']:.1f} ms "
        f"({scrape['scrape_kib']:.0f} KiB)"
    )
    print(
        json.dumps(
            {
                "ratio_rps": round(rps["with metrics"] / rps[base], 3),
                "ratio_cpu": round(cpu["with metrics"] / cpu[base], 3),
                "observe_us": {k: round(v, 2) for k, v in observe.items()},
                **{k: round(v, 1) for k, v in scrape.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
