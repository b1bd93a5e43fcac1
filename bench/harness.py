"""Shared bench helpers: real servers on random ports over temp folders (the tests' process and
server helpers), a bounded load loop, and result tables with ratios against a baseline
measured in the same run.

Load runs in separate processes (each with a few threads and one httpx client per thread), so
the client is not one GIL-bound process; on a small machine client and server still share the
cores, which is why every figure is reported next to a baseline measured the same way.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers, from anywhere

from tests.helpers.cli import cli_process
from tests.helpers.processes import free_port
from tests.helpers.server import HttpProcess, Server, serve_env

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
WORKER_CLASS = "uvicorn_worker.UvicornWorker"


# --- processes: the tests' own helpers (tests/helpers/processes.py, server.py) -----------------


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without ZR_ variables (the bench's .env decides), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **(extra or {})}


def cli(env_file: Path, *args: str, input: str | None = None) -> str:
    """Run a `zerospeech-api` command; its stdout, or exit with its stderr."""
    result = cli_process(env_file.parent, *args, env_file=env_file, input=input, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {result.stderr}")
    return result.stdout


def start_serve(
    folder: Path, *, workers: int, env: dict[str, str] | None = None, args: Sequence[str] = ()
) -> Server:
    """`init` then `serve` over `folder` on a random port; settings from `env` (ZR_*, the
    product's defaults otherwise, argon2 included), extra gunicorn options in `args`."""
    env_file = serve_env(folder, env, name="bench.env", fast_hash=False)
    cli(env_file, "init")
    return Server(env_file, workers=workers, extra_args=list(args), timeout=60)


def start_gunicorn(
    app: str, *, folder: Path, workers: int, env: dict[str, str] | None = None
) -> HttpProcess:
    """A plain gunicorn for `module:attr` in bench/, same worker class, count, keep-alive and
    access log as `serve`; `env` is added to its environment."""
    port = free_port()
    argv = [
        sys.executable, "-m", "gunicorn", app,
        "--chdir", str(BENCH_DIR), "--worker-class", WORKER_CLASS, "--workers", str(workers),
        "--bind", f"127.0.0.1:{port}", "--keep-alive", "5", "--access-logfile", "-",
    ]  # fmt: skip
    return HttpProcess("bare", argv, port=port, cwd=folder, env=clean_env(env), timeout=60)


def temp_folder(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=prefix)


# --- load -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request to repeat: method, path, form `data` or `json`, and the status expected."""

    method: str
    path: str
    data: dict[str, str] | None = None
    json: Any = None
    expect: int = 200


@dataclass
class LoadResult:
    label: str
    seconds: float
    latencies: list[float]
    errors: int
    concurrency: int
    server_cpu: float = float("nan")  # CPU seconds the server used during the run

    @property
    def cpu_ms_per_request(self) -> float:
        """Server CPU per answered request: unlike req/s, it hardly depends on what else runs."""
        return self.server_cpu / max(1, self.count) * 1000

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.count / self.seconds

    def percentile(self, q: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p95(self) -> float:
        return self.percentile(95)


def _load_process(url: str, request: Request, seconds: float, threads: int, out: mp.Queue) -> None:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def loop() -> None:
        nonlocal errors
        mine: list[float] = []
        bad = 0
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < end:
                start = time.perf_counter()
                try:
                    response = client.request(
                        request.method, request.path, data=request.data, json=request.json
                    )
                    ok = response.status_code == request.expect
                except httpx.HTTPError:
                    ok = False
                if ok:
                    mine.append(time.perf_counter() - start)
                else:
                    bad += 1
        with lock:
            latencies.extend(mine)
            errors += bad

    pool = [threading.Thread(target=loop) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    out.put((latencies, errors))


def run_load(
    url: str,
    request: Request,
    *,
    seconds: float,
    concurrency: int,
    processes: int = 2,
    label: str = "",
    server: HttpProcess | None = None,
) -> LoadResult:
    """Repeat `request` for `seconds` with `concurrency` requests in flight (bounded: each of
    `concurrency` loops waits for its answer), spread over `processes` client processes."""
    processes = max(1, min(processes, concurrency))
    per = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    queue: mp.Queue = mp.get_context("fork").Queue()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_load_process, args=(url, request, seconds, n, queue)) for n in per]
    cpu_before = server.cpu_seconds() if server else float("nan")
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    errors = 0
    for _ in procs:
        lat, err = queue.get(timeout=seconds + 120)
        latencies += lat
        errors += err
    for proc in procs:
        proc.join()
    cpu = server.cpu_seconds() - cpu_before if server else float("nan")
    return LoadResult(label or request.path, seconds, latencies, errors, concurrency, cpu)


def interleaved_rounds(
    cases: dict[str, tuple[str, str, HttpProcess | None]],
    *,
    rounds: int,
    seconds: float,
    concurrency: int,
) -> dict[str, list[tuple[float, float]]]:
    """Each case (base URL, path, and the server whose CPU it costs, or None) for `seconds`, in
    `rounds` interleaved rounds after a warm-up round; (req/s, server CPU ms per request) per
    case and round. Exits on any failed request."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for round_ in range(rounds + 1):  # the first round warms up
        for name, (url, path, server) in cases.items():
            result = run_load(
                url, Request("GET", path), seconds=seconds, concurrency=concurrency, label=name,
                server=server,
            )  # fmt: skip
            if result.errors:
                raise SystemExit(f"{name}: {result.errors} failed requests")
            if round_:
                samples[name].append((result.rps, result.cpu_ms_per_request))
    return samples


def medians(
    samples: dict[Any, list[tuple[float, float]]],
) -> tuple[dict[Any, float], dict[Any, float]]:
    """The median req/s (or other rate) and the median server CPU per request of each case."""
    rates = {name: median([s[0] for s in values]) for name, values in samples.items()}
    cpu = {name: median([s[1] for s in values]) for name, values in samples.items()}
    return rates, cpu


def best_of(results: Sequence[LoadResult]) -> LoadResult:
    """The median-throughput round of several (less noise than one round)."""
    ordered = sorted(results, key=lambda r: r.rps)
    return ordered[len(ordered) // 2]


# --- output ---------------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def machine() -> str:
    return f"{os.cpu_count()} CPU(s), Python {sys.version.split()[0]}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
