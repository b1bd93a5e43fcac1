"""Shared bench helpers: real servers on random ports over temp folders, a bounded load loop,
and result tables with ratios against a baseline measured in the same run.

Load runs in separate processes (each with a few threads and one httpx client per thread), so
the client is not one GIL-bound process; on a small machine client and server still share the
cores, which is why every figure is reported next to a baseline measured the same way.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "zerospeech_api"]
WORKER_CLASS = "uvicorn_worker.UvicornWorker"


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without ZR_ variables (the bench's .env decides), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **(extra or {})}


@dataclass
class RunningServer:
    """A server process in its own process group, stopped (TERM, then KILL) by `stop()`."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def wait_ready(self, path: str = "/", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited early:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"{self.name} did not answer in {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server's whole process group."""
        return group_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def group_cpu_seconds(pgid: int) -> float:
    """Sum of utime + stime of the live processes in a process group (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state(0) ppid(1) pgrp(2) ... utime(11) stime(12)
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _spawn(name: str, argv: Sequence[str], *, cwd: Path, env: dict[str, str]) -> RunningServer:
    port = int(argv[argv.index("--bind") + 1].rsplit(":", 1)[1])
    log_path = cwd / f"{name}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return RunningServer(name, f"http://127.0.0.1:{port}", proc, log_path)


def write_env(folder: Path, values: dict[str, str]) -> Path:
    path = folder / "bench.env"
    base = {"ZR_DATA_DIR": str(folder / "data"), "ZR_SECRET_KEY": secrets.token_urlsafe(48)}
    path.write_text("".join(f"{k}={v}\n" for k, v in {**base, **values}.items()))
    return path


def cli(env_file: Path, *args: str, input: str | None = None) -> str:
    """Run a `zerospeech-api` command; its stdout, or exit with its stderr."""
    result = subprocess.run(
        [*CLI, "--env-file", str(env_file), *args],
        input=input, capture_output=True, text=True, env=clean_env(), cwd=env_file.parent,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {result.stderr}")
    return result.stdout


def start_serve(
    folder: Path, *, workers: int, env: dict[str, str] | None = None, args: Sequence[str] = ()
) -> RunningServer:
    """`init` then `serve` over `folder` on a random port; settings from `env` (ZR_*), extra
    gunicorn options in `args`."""
    env_file = write_env(folder, env or {})
    cli(env_file, "init")
    argv = [
        *CLI, "--env-file", str(env_file), "serve",
        "--bind", f"127.0.0.1:{free_port()}", "--workers", str(workers), *args,
    ]  # fmt: skip
    server = _spawn("serve", argv, cwd=folder, env=clean_env())
    server.extra["env_file"] = env_file
    server.wait_ready("/health")
    return server


def start_gunicorn(
    app: str, *, folder: Path, workers: int, env: dict[str, str] | None = None
) -> RunningServer:
    """A plain gunicorn for `module:attr` in bench/, same worker class, count, keep-alive and
    access log as `serve`; `env` is added to its environment."""
    argv = [
        sys.executable, "-m", "gunicorn", app,
        "--chdir", str(BENCH_DIR), "--worker-class", WORKER_CLASS, "--workers", str(workers),
        "--bind", f"127.0.0.1:{free_port()}", "--keep-alive", "5", "--access-logfile", "-",
    ]  # fmt: skip
    server = _spawn("bare", argv, cwd=folder, env=clean_env(env))
    server.wait_ready("/")
    return server


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
    server: RunningServer | None = None,
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
