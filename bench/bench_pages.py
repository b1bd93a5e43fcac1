"""Leaderboard web pages: `GET /page/leaderboards/{label}` against a bare endpoint returning the
same bytes, in one run.

    python bench/bench_pages.py [--seconds 3] [--rounds 3] [--workers 2] [--concurrency 4]

1. Direct: the page of a leaderboard of 40 and of 1,000 realistic entries from `serve`, against
   a bare FastAPI app under the same gunicorn settings (worker class, count, keep-alive, access
   log) whose endpoint returns the identical bytes. Goal: page >= 0.9 x bare (requests/s), and
   the server CPU per request of each.
2. Through the shipped nginx config: the same pages from nginx's cache against nginx serving the
   identical bytes as a static file (the best a cache can do).
Rounds are interleaved and the median kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    HttpProcess,
    free_port,
    interleaved_rounds,
    machine,
    medians,
    print_table,
    start_gunicorn,
    start_serve,
    temp_folder,
)

SIZES = (40, 1000)


def create_bare_app():
    """The baseline: one endpoint returning the saved page bytes (read at start-up)."""
    from fastapi import FastAPI, Response

    folder = Path(os.environ["BENCH_PAGES"])
    bodies = {path.stem: path.read_bytes() for path in folder.glob("*.html")}
    app = FastAPI()

    @app.get("/")
    async def root() -> Response:
        return Response(b"ok")

    @app.get("/bare/{name}")
    async def bare(name: str) -> Response:
        return Response(bodies[name], media_type="text/html; charset=utf-8")

    return app


def populate(env_file: Path) -> None:
    """A benchmark with leaderboards of 40 and 1,000 dated realistic entries."""
    from tests.helpers.factories import make_benchmark, make_leaderboard, realistic_entry
    from zerospeech_api.db.engine import Database
    from zerospeech_api.leaderboards import service
    from zerospeech_api.settings import load_settings

    db = Database(load_settings(env_file).database)
    make_benchmark(db, "sLM21")
    rng = random.Random(1)
    for size in SIZES:
        label = f"slm21-{size}"
        make_leaderboard(db, label, "sLM21")
        entries = []
        for n in range(size):
            entry = realistic_entry(n)
            day = dt.date(2021, 1, 1) + dt.timedelta(days=rng.randint(0, 1200))
            entry["submission_date"] = f"{day.isoformat()}T12:00:00+00:00"
            entries.append(entry)
        with db.transaction() as session:
            service.import_entries(session=session, label=label, entries=entries)
    db.dispose()


def start_nginx(folder: Path, *, api_port: int, static_dir: Path) -> tuple[HttpProcess, str]:
    """The shipped nginx config in front of `serve`, plus a static server of the page files."""
    from tests.helpers.nginx import nginx_argv, render_nginx

    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if nginx is None:
        raise SystemExit("nginx is not installed")
    nginx_dir = folder / "nginx"
    nginx_dir.mkdir()
    port, static_port = free_port(), free_port()
    static_server = (
        f"    server {{\n        listen 127.0.0.1:{static_port};\n"
        f"        location / {{ root {static_dir}; default_type 'text/html; charset=utf-8'; }}\n"
        "    }"
    )
    config = render_nginx(nginx_dir, nginx_port=port, api_port=api_port, extra=static_server)
    proxy = HttpProcess(
        "nginx", nginx_argv(nginx, config), port=port, cwd=nginx_dir, env=dict(os.environ),
        ready="/health", timeout=60,
    )  # fmt: skip
    return proxy, f"http://127.0.0.1:{static_port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    print(f"bench_pages on {machine()}; {args.workers} workers, {args.concurrency} concurrent")

    with temp_folder("zr-bench-pages-") as tmp:
        folder = Path(tmp)
        api = start_serve(
            folder, workers=args.workers,
            env={"ZR_ARGON2_TIME_COST": "1", "ZR_ARGON2_MEMORY_KIB": "8192"},
        )  # fmt: skip
        bare = proxy = None
        try:
            populate(api.env_file)
            pages = folder / "pages"
            pages.mkdir()
            for size in SIZES:
                body = httpx.get(f"{api.url}/page/leaderboards/slm21-{size}", timeout=120).content
                (pages / f"{size}.html").write_bytes(body)
                print(f"page of {size} entries: {len(body) / 1024:.0f} KiB")
            bare = start_gunicorn(
                "bench_pages:create_bare_app()", folder=folder, workers=args.workers,
                env={"BENCH_PAGES": str(pages)},
            )  # fmt: skip
            proxy, static_url = start_nginx(folder, api_port=api.port, static_dir=pages)
            for size in SIZES:
                page = (pages / f"{size}.html").read_bytes()
                assert httpx.get(f"{bare.url}/bare/{size}", timeout=120).content == page
                assert httpx.get(f"{static_url}/{size}.html", timeout=120).content == page
                assert (
                    httpx.get(f"{proxy.url}/page/leaderboards/slm21-{size}", timeout=120).content
                    == page
                )

            # (base URL, path, server charged with the CPU: not nginx, whose cost is not ours)
            cases: dict[str, tuple[str, str, HttpProcess | None]] = {}
            for size in SIZES:
                page = f"/page/leaderboards/slm21-{size}"
                cases[f"bare {size}"] = (bare.url, f"/bare/{size}", bare)
                cases[f"page {size}"] = (api.url, page, api)
                cases[f"nginx static {size}"] = (static_url, f"/{size}.html", None)
                cases[f"nginx cache page {size}"] = (proxy.url, page, None)
            samples = interleaved_rounds(
                cases, rounds=args.rounds, seconds=args.seconds, concurrency=args.concurrency
            )
            cache_status = httpx.get(
                f"{proxy.url}/page/leaderboards/slm21-40", timeout=120
            ).headers.get("x-cache-status")
        finally:
            for server in (proxy, bare, api):
                if server is not None:
                    server.stop()

    rps, cpu = medians(samples)
    rows = []
    for size in SIZES:
        base, page = f"bare {size}", f"page {size}"
        rows.append([base, rps[base], 1.0, cpu[base], ""])
        rows.append([page, rps[page], rps[page] / rps[base], cpu[page], ">= 0.9"])
        static, cached = f"nginx static {size}", f"nginx cache page {size}"
        rows.append([static, rps[static], 1.0, float("nan"), ""])
        rows.append([cached, rps[cached], rps[cached] / rps[static], float("nan"), "(reference)"])
    print(f"\n{args.rounds} interleaved rounds of {args.seconds:g} s, median")
    print_table(["case", "req/s", "ratio", "server CPU ms/req", "goal"], rows)
    print(f"(nginx cache status of a page read: {cache_status})")
    print(json.dumps({"ratios": {r[0]: round(r[2], 3) for r in rows}}))


if __name__ == "__main__":
    main()
