"""The appliance: start-up of the pyz against a venv, nginx against direct gunicorn, and nginx's
leaderboard cache against nginx serving the same bytes as a static file, all in one run.

    python bench/bench_appliance.py [--pyz dist/zerospeech-api.pyz] [--rounds 5] [--seconds 5]

1. Start-up: launch `serve` (2 workers) until the first 200 from /health, for the pyz with an
   empty SHIV_ROOT (first run: extraction), the pyz again (warm), and the same locked wheels
   installed in a virtual environment; rounds interleaved, medians reported. The pyz is run by
   that venv's interpreter, so both start the same Python with the same .pth files and differ
   only in where the code comes from. Goals: warm pyz <= 1.05 x venv, first run < 1.5 s.
2. Size of the pyz.
3. Requests/s of GET /benchmarks/list (a small cacheable JSON read, no credentials) through the
   shipped nginx config against gunicorn directly. Goal: nginx >= 0.8 x direct. nginx caches
   /benchmarks/ reads, so a second figure uses GET / (never cached): the proxy's own cost.
4. Requests/s of GET /leaderboards/{label}/json (100 entries) through nginx with its cache
   against nginx serving the identical body from a file. Goal: cached >= 0.5 x static.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    HttpProcess,
    Request,
    free_port,
    machine,
    median,
    print_table,
    run_load,
)
from tests.helpers.nginx import nginx_argv, render_nginx
from tests.helpers.processes import Process

ROOT = Path(__file__).resolve().parents[1]
BOARD = "bench-board"


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZR_", "SHIV_"))}
    return {**env, **extra}


def time_to_first_response(argv: list[str], *, folder: Path, env: dict[str, str]) -> float:
    """Seconds from launching `serve` to the first 200 from /health (then stopped)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    server = Process(
        [*argv, "--bind", f"127.0.0.1:{port}"], cwd=folder, env=env, log=folder / "start.log"
    )
    try:
        # Polled every 5 ms (not the tests' 100 ms): the wait is what is measured.
        with httpx.Client(timeout=2) as client:
            while True:
                if not server.alive():
                    raise SystemExit(f"serve exited early:\n{server.output()[-3000:]}")
                try:
                    if client.get(f"{url}/health").status_code == 200:
                        return time.perf_counter() - start
                except httpx.HTTPError:
                    pass
                if time.perf_counter() - start > 60:
                    raise SystemExit(f"no answer in 60 s:\n{server.output()[-3000:]}")
                time.sleep(0.005)
    finally:
        server.stop()


def file_creation_ms(folder: Path, count: int = 1000) -> float:
    """What one extracted file costs on this disk: create, write 1 KiB, close (median of 3)."""
    times = []
    for n in range(3):
        target = folder / str(n)
        target.mkdir(parents=True)
        start = time.perf_counter()
        for i in range(count):
            (target / f"{i}.py").write_bytes(b"x" * 1024)
        times.append((time.perf_counter() - start) * 1000 / count)
        shutil.rmtree(target)
    return median(times)


def make_venv(folder: Path) -> Path:
    """The same locked wheels and the project, pip-installed (bytecode compiled by pip)."""
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "-q"]
    lock = ROOT / "packaging" / "requirements.lock"
    for extra in (["--require-hashes", "-r", str(lock)], ["--no-deps", str(ROOT)]):
        subprocess.run([*pip, "install", *extra], check=True, capture_output=True)
    return venv / "bin" / "zerospeech-api"


def leaderboard_document(n: int = 100) -> dict:
    data = []
    for i in range(n):
        data.append(
            {
                "model_id": f"model{i}",
                "submission_id": None,
                "submission_date": "2021-03-22T23:00:44+00:00",
                "description": "CPC + k-means + LSTM " * 3,
                "publication": {"author_short": f"Author {i} et al.", "institution": "Lab"},
                "details": {"train_set": "LibriSpeech 960h", "gpu_budget": "60"},
                "scores": {"lexical": {"all": {"dev": i / n, "test": (n - i) / n}}},
                "extras": {},
            }
        )
    return {"last_modified": "2021-03-22T23:00:44+00:00", "data": data}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyz", type=Path, help="a built pyz (default: build one now)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--startup-only", action="store_true", help="skip the throughput part")
    args = parser.parse_args()
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if nginx is None:
        raise SystemExit("nginx is not installed")

    with tempfile.TemporaryDirectory(prefix="zr-bench-appliance-") as tmp:
        folder = Path(tmp)
        pyz = args.pyz.resolve() if args.pyz else None
        if pyz is None:
            pyz = folder / "zerospeech-api.pyz"
            print("building the pyz...", flush=True)
            subprocess.run(
                [str(ROOT / "build.sh"), "--output", str(pyz)],
                check=True, capture_output=True, env={**os.environ, "PYTHON": sys.executable},
            )  # fmt: skip
        print("installing the venv baseline...", flush=True)
        venv_cli = make_venv(folder)
        api_port = free_port()
        env_file = folder / "bench.env"
        env_file.write_text(
            f"ZR_DATA_DIR={folder / 'data'}\nZR_WORKERS=2\nZR_WORKER_PROCESSES=0\n"
            f"ZR_BIND=127.0.0.1:{api_port}\nZR_LOG_LEVEL=warning\n"
        )
        subprocess.run(
            [str(venv_cli), "--env-file", str(env_file), "init"],
            check=True, capture_output=True, cwd=folder, env=base_env(),
        )  # fmt: skip

        # --- 1. start-up ---------------------------------------------------------------------
        warm_root = folder / "shiv-warm"
        pyz_argv = [
            str(venv_cli.with_name("python")),
            str(pyz),
            "--env-file",
            str(env_file),
            "serve",
        ]
        venv_argv = [str(venv_cli), "--env-file", str(env_file), "serve"]
        time_to_first_response(pyz_argv, folder=folder, env=base_env(SHIV_ROOT=str(warm_root)))
        cold, warm, venv = [], [], []
        for n in range(args.rounds):
            root = folder / f"shiv-cold-{n}"
            cold.append(
                time_to_first_response(pyz_argv, folder=folder, env=base_env(SHIV_ROOT=str(root)))
            )
            shutil.rmtree(root)
            warm.append(
                time_to_first_response(
                    pyz_argv, folder=folder, env=base_env(SHIV_ROOT=str(warm_root))
                )
            )
            venv.append(time_to_first_response(venv_argv, folder=folder, env=base_env()))
        print(f"\nzerospeech-api appliance bench, {machine()}, {args.rounds} rounds (median s)")
        print_table(
            ["start-up (serve, 2 workers)", "median s", "min s", "ratio to venv", "goal"],
            [
                ["venv (baseline)", median(venv), min(venv), 1.0, ""],
                ["pyz warm", median(warm), min(warm), median(warm) / median(venv), "<= 1.05"],
                ["pyz first run (extraction)", median(cold), min(cold), median(cold) / median(venv),
                 "< 1.5 s"],
            ],
        )  # fmt: skip
        warm_ratio, first = median(warm) / median(venv), median(cold)
        print(f"goals: warm {warm_ratio:.2f} x venv -> {'met' if warm_ratio <= 1.05 else 'NOT met'}"
              f"; first run {first:.2f} s -> {'met' if first < 1.5 else 'NOT met'}")  # fmt: skip
        print(f"\npyz size: {pyz.stat().st_size / 1e6:.1f} MB")
        files = [path for path in warm_root.rglob("*") if path.is_file()]
        size = sum(path.stat().st_size for path in files) / 1e6
        print(f"extracted on first run: {len(files)} files, {size:.1f} MB; this disk creates a "
              f"1 KiB file in {file_creation_ms(folder / 'files'):.2f} ms")  # fmt: skip
        if args.startup_only:
            return

        # --- 3. and 4.: the appliance's serve behind nginx -------------------------------------
        env = base_env(SHIV_ROOT=str(warm_root))
        cli = [sys.executable, str(pyz), "--env-file", str(env_file)]
        subprocess.run([*cli, "benchmarks", "create", "bench-b", "--label", "Bench", "--url",
                        "https://example.org"], check=True, capture_output=True, cwd=folder,
                       env=env)  # fmt: skip
        subprocess.run([*cli, "leaderboards", "create", BOARD, "--benchmark", "bench-b",
                        "--sort-key", "scores.lexical.all.test"], check=True,
                       capture_output=True, cwd=folder, env=env)  # fmt: skip
        historic = folder / "historic.json"
        historic.write_text(json.dumps(leaderboard_document()))
        subprocess.run([*cli, "leaderboards", "import", BOARD, str(historic)], check=True,
                       capture_output=True, cwd=folder, env=env)  # fmt: skip
        api = HttpProcess(
            "serve", pyz_argv, port=api_port, cwd=folder, env=env, ready="/health", timeout=60
        )
        proxy = None
        try:
            body = httpx.get(f"{api.url}/leaderboards/{BOARD}/json").content
            static_dir = folder / "static"
            static_dir.mkdir()
            (static_dir / "board.json").write_bytes(body)
            nginx_dir = folder / "nginx"
            nginx_dir.mkdir()
            nginx_port, static_port = free_port(), free_port()
            static_server = (
                f"    server {{\n        listen 127.0.0.1:{static_port};\n"
                f"        location / {{ root {static_dir}; default_type application/json; }}\n"
                "    }"
            )
            config = render_nginx(
                nginx_dir, nginx_port=nginx_port, api_port=api_port, extra=static_server
            )
            proxy = HttpProcess(
                "nginx", nginx_argv(nginx, config), port=nginx_port, cwd=nginx_dir,
                env=base_env(), ready="/health", timeout=60,
            )  # fmt: skip
            static_url = f"http://127.0.0.1:{static_port}"
            assert httpx.get(f"{static_url}/board.json").content == body
            assert httpx.get(f"{proxy.url}/leaderboards/{BOARD}/json").content == body

            def measure(url: str, path: str, label: str) -> float:
                result = run_load(
                    url, Request("GET", path), seconds=args.seconds,
                    concurrency=args.concurrency, label=label,
                )  # fmt: skip
                if result.errors:
                    raise SystemExit(f"{label}: {result.errors} failed requests")
                return result.rps

            rounds: dict[str, list[float]] = {}
            cases = [
                ("gunicorn direct: /benchmarks/list", api.url, "/benchmarks/list"),
                ("nginx (cache): /benchmarks/list", proxy.url, "/benchmarks/list"),
                ("gunicorn direct: /", api.url, "/"),
                ("nginx (no cache): /", proxy.url, "/"),
                ("nginx static file: board", static_url, "/board.json"),
                ("nginx cache: leaderboard json", proxy.url, f"/leaderboards/{BOARD}/json"),
                ("gunicorn direct: leaderboard json", api.url, f"/leaderboards/{BOARD}/json"),
            ]
            for _ in range(3):  # interleaved rounds, median of three
                for label, url, path in cases:
                    rounds.setdefault(label, []).append(measure(url, path, label))
            rps = {label: median(values) for label, values in rounds.items()}
            hits = httpx.get(f"{proxy.url}/leaderboards/{BOARD}/json").headers.get("x-cache-status")
        finally:
            if proxy is not None:
                proxy.stop()
            api.stop()
        direct, via = rps[cases[0][0]], rps[cases[1][0]]
        direct_root, via_root = rps[cases[2][0]], rps[cases[3][0]]
        static, cached = rps[cases[4][0]], rps[cases[5][0]]
        print(f"\nthroughput, {args.concurrency} concurrent, {args.seconds:g} s x 3 (median req/s)")
        print_table(
            ["case", "req/s", "ratio", "goal"],
            [
                [cases[0][0], direct, 1.0, ""],
                [cases[1][0], via, via / direct, ">= 0.8"],
                [cases[2][0], direct_root, 1.0, ""],
                [cases[3][0], via_root, via_root / direct_root, "(proxy cost)"],
                [cases[4][0], static, 1.0, ""],
                [cases[5][0], cached, cached / static, ">= 0.5"],
                [cases[6][0], rps[cases[6][0]], rps[cases[6][0]] / static, ""],
            ],
        )
        print(f"(leaderboard body {len(body)} bytes; cache status of the last read: {hits})")


if __name__ == "__main__":
    main()
