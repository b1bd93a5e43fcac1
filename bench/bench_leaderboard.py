"""Leaderboard reads under `serve` vs a bare FastAPI endpoint (same run), and publish latency.

    python bench/bench_leaderboard.py [--seconds 4] [--rounds 3] [--workers 2] [--clients 2]

1. GET /leaderboards/{label}/json for leaderboards of 40 and 1,000 realistic entries, against a
   bare FastAPI app (same gunicorn worker class, worker count and access log) whose endpoint
   returns a constant body of the same size; plus the 304 path (If-None-Match). Rounds are
   interleaved and the median kept; the figure is the ratio leaderboard / bare.
2. Time from a submission becoming `uploaded` to its entry being published (row committed) and
   visible on the public JSON, with an idle `worker` process on default settings.
3. Cold CSV: right after a change of a big leaderboard (--cold-entries), the wall time of
   --cold-readers concurrent GET /csv against one such read (baseline, same run; with single
   flight each process compiles once, so the ratio stays near 1, not near the reader count), and
   the growth of the server workers' peak RSS (VmHWM) during the concurrent reads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.processes import (
    Process,
    children,
    cli_command,
    free_port,
    group_cpu_seconds,
    peak_rss_mib,
)
from tests.helpers.server import HttpProcess, Server, init_data, serve_env

ROOT = Path(__file__).resolve().parents[1]


def create_bare_app():
    """The baseline: one FastAPI endpoint returning a constant body per name."""
    from fastapi import FastAPI, Response

    bodies = {
        name: Path(path).read_bytes()
        for name, path in json.loads(os.environ["BENCH_BODIES"]).items()
    }
    app = FastAPI()

    @app.get("/bare/{name}")
    async def bare(name: str) -> Response:
        return Response(bodies[name], media_type="application/json")

    return app


# --- load generator -------------------------------------------------------------------------


def _client(port: int, path: str, extra: str, seconds: float, expect: int, out: mp.Queue) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray()
    count = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock.sendall(request)
        while (split := buffer.find(b"\r\n\r\n")) < 0:
            buffer += sock.recv(262144)
        head = bytes(buffer[:split]).decode("latin-1")
        del buffer[: split + 4]
        status = int(head[9:12])
        if status != expect:
            raise SystemExit(f"{path}: status {status}, expected {expect}")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        while len(buffer) < length:
            buffer += sock.recv(max(262144, length - len(buffer)))
        del buffer[:length]
        count += 1
    sock.close()
    out.put(count)


def measure(
    port: int, path: str, *, seconds: float, clients: int, master: int, extra: str = "", expect=200
) -> tuple[float, float]:
    """(requests per second, server CPU milliseconds per request) over `clients` keep-alive
    connections in separate processes. CPU per request does not depend on other load."""
    queue: mp.Queue = mp.Queue()
    procs = [
        mp.Process(target=_client, args=(port, path, extra, seconds, expect, queue))
        for _ in range(clients)
    ]
    cpu = group_cpu_seconds(master)
    for p in procs:
        p.start()
    total = sum(queue.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join()
    cpu = group_cpu_seconds(master) - cpu
    return total / seconds, 1000 * cpu / max(1, total)


# --- data -----------------------------------------------------------------------------------


def prepare(env_file: Path) -> dict[str, bytes]:
    """init, a benchmark with leaderboards of 40 and 1,000 entries; returns their JSON bodies."""
    from tests.helpers.factories import make_benchmark, make_leaderboard, realistic_entry
    from zerospeech_api.db.engine import Database
    from zerospeech_api.leaderboards import service
    from zerospeech_api.leaderboards.cache import encode
    from zerospeech_api.settings import load_settings

    init_data(env_file)
    settings = load_settings(env_file)
    db = Database(settings.database)
    make_benchmark(db, "sLM21")
    bodies = {}
    for size in (40, 1000):
        label = f"slm21-{size}"
        make_leaderboard(db, label, "sLM21")
        with db.transaction() as session:
            service.import_entries(
                session=session, label=label, entries=[realistic_entry(n) for n in range(size)]
            )
        with db.session(read_only=True) as session:
            lb = service.get_leaderboard(session=session, label=label)
            bodies[str(size)] = encode(service.compile_leaderboard(session=session, leaderboard=lb))
    db.dispose()
    return bodies


def publish_latency(env_file: Path, port: int, runs: int) -> list[tuple[float, float]]:
    """(seconds to committed entry, seconds to visible on /json) per submission."""
    import httpx
    from sqlalchemy import select

    from tests.helpers.factories import make_leaderboard, make_submission, make_user
    from zerospeech_api.db.engine import Database
    from zerospeech_api.db.tables import LeaderboardEntry, Submission, SubmissionStatus
    from zerospeech_api.settings import load_settings
    from zerospeech_api.submissions.events import set_status

    settings = load_settings(env_file)
    db = Database(settings.database)
    make_leaderboard(db, "latency", "sLM21")
    user = make_user(db, settings)
    results = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(runs):
            sid = make_submission(
                db, settings, user, benchmark_id="sLM21", status=SubmissionStatus.UPLOADING
            )
            time.sleep(0.3)  # let the worker go idle at a random point of its poll cycle
            with db.transaction() as session:
                set_status(
                    session=session,
                    submission=session.get(Submission, sid),
                    status=SubmissionStatus.UPLOADED,
                    reason="archive verified",
                )
            t0 = time.monotonic()
            committed = visible = None
            while visible is None and time.monotonic() - t0 < 30:
                if committed is None:
                    with db.session(read_only=True) as session:
                        if session.scalar(
                            select(LeaderboardEntry.id).where(LeaderboardEntry.submission_id == sid)
                        ):
                            committed = time.monotonic() - t0
                if committed is not None and sid in client.get("/leaderboards/latency/json").text:
                    visible = time.monotonic() - t0
                time.sleep(0.005)
            results.append((committed or float("nan"), visible or float("nan")))
    db.dispose()
    return results


def asgi_in_process(env_file: Path, body40: bytes, calls: int = 3000) -> dict[str, float]:
    """Microseconds per request of the whole app in-process (middleware, routing, handler; no
    server, no access log) vs the bare app: the endpoint's own cost, insensitive to load."""
    import asyncio

    from fastapi import FastAPI, Response

    from zerospeech_api.app import create_app
    from zerospeech_api.settings import load_settings

    ours = create_app(load_settings(env_file))
    bare = FastAPI()

    @bare.get("/bare/{name}")
    async def constant(name: str) -> Response:
        return Response(body40, media_type="application/json")

    async def run(app: Any, path: str) -> float:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": [(b"host", b"x")], "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }  # fmt: skip

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(_message: dict) -> None:
            return None

        start = time.perf_counter()
        for _ in range(calls):
            await app(scope, receive, send)
        return (time.perf_counter() - start) / calls * 1e6

    async def rounds() -> dict[str, float]:
        best = {"bare": float("inf"), "ours": float("inf")}
        await run(ours, "/leaderboards/slm21-40/json")  # compile and cache
        for _ in range(5):
            best["bare"] = min(best["bare"], await run(bare, "/bare/40"))
            best["ours"] = min(best["ours"], await run(ours, "/leaderboards/slm21-40/json"))
        return best

    return asyncio.run(rounds())


def workers_peak_rss_mib(master: int) -> float:
    """Sum of the peak resident memory (VmHWM) of a gunicorn master's worker processes."""
    return sum(peak_rss_mib(pid) for pid in children(master))


def cold_csv(env_file: Path, port: int, master: int, *, entries: int, readers: int) -> None:
    """Concurrent CSV reads of a big leaderboard just changed vs one such read (see 3.)."""
    import threading

    import httpx

    from tests.helpers.factories import make_leaderboard, realistic_entry
    from zerospeech_api.db.engine import Database
    from zerospeech_api.leaderboards import service
    from zerospeech_api.settings import load_settings

    settings = load_settings(env_file)
    db = Database(settings.database)
    make_leaderboard(db, "cold", "sLM21")
    data = [realistic_entry(n) for n in range(entries)]
    url = f"http://127.0.0.1:{port}/leaderboards/cold/csv"

    def reads(count: int) -> tuple[float, float]:
        """(wall seconds, server CPU seconds) of `count` readers right after a change."""
        with db.transaction() as session:  # a change: every process must compile again
            service.import_entries(session=session, label="cold", entries=data)
        time.sleep(settings.leaderboard_recheck_seconds + 0.2)
        failures: list[int] = []

        def one(n: int) -> None:
            # Each reader from its own loopback address, as distinct visitors are (the server
            # limits requests in flight per client).
            transport = httpx.HTTPTransport(local_address=f"127.0.0.{2 + n}")
            with httpx.Client(transport=transport, timeout=600) as client:
                status = client.get(url).status_code
            if status != 200:
                failures.append(status)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
        start, cpu = time.monotonic(), group_cpu_seconds(master)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise SystemExit(f"cold CSV reads failed: {failures}")
        return time.monotonic() - start, group_cpu_seconds(master) - cpu

    reads(8)  # warm-up: every worker has compiled it once
    single = min(reads(1) for _ in range(2))
    before = workers_peak_rss_mib(master)
    together = reads(readers)
    grown = workers_peak_rss_mib(master) - before
    db.dispose()
    print(f"# cold CSV after a change, {entries} entries")
    print(f"{'case':24s} {'wall s':>8s} {'server CPU s':>13s}")
    print(f"{'1 read':24s} {single[0]:8.2f} {single[1]:13.2f}")
    print(f"{f'{readers} concurrent reads':24s} {together[0]:8.2f} {together[1]:13.2f}")
    print(
        f"ratios ({readers} / 1): wall {together[0] / single[0]:.2f}, "
        f"server CPU {together[1] / max(single[1], 0.01):.2f}; "
        f"workers' peak RSS grew {grown:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=8)
    parser.add_argument("--cold-entries", type=int, default=5000)
    parser.add_argument("--cold-readers", type=int, default=30)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="zr-bench-lb-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
    env_file = serve_env(tmp, name=".env")
    bodies = prepare(env_file)
    paths = {}
    for name, body in bodies.items():
        paths[name] = str(tmp / f"body-{name}.json")
        Path(paths[name]).write_bytes(body)
    paths["empty"] = str(tmp / "body-empty.json")
    Path(paths["empty"]).write_bytes(b"")

    bare_port = free_port()
    api = Server(env_file, workers=args.workers, timeout=60)
    bare = worker = None
    try:
        bare = HttpProcess(
            "bare",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                "uvicorn_worker.UvicornWorker",
                "-w",
                str(args.workers),
                "-b",
                f"127.0.0.1:{bare_port}",
                "--access-logfile",
                "-",
                "--error-logfile",
                "-",
                "bench.bench_leaderboard:create_bare_app()",
            ],
            port=bare_port,
            cwd=ROOT,
            env={**base_env, "BENCH_BODIES": json.dumps(paths)},
            ready="/bare/40",
            timeout=60,
        )
        api_port = api.port
        etags = {}
        import httpx

        for size in ("40", "1000"):
            response = httpx.get(f"http://127.0.0.1:{api_port}/leaderboards/slm21-{size}/json")
            assert response.content == bodies[size], "served body differs from the compiled one"
            etags[size] = response.headers["etag"]
        cases = {
            "bare 40": (bare, "/bare/40", "", 200),
            "leaderboard 40": (api, "/leaderboards/slm21-40/json", "", 200),
            "bare 1000": (bare, "/bare/1000", "", 200),
            "leaderboard 1000": (api, "/leaderboards/slm21-1000/json", "", 200),
            "bare empty": (bare, "/bare/empty", "", 200),
            "leaderboard 1000 304": (
                api,
                "/leaderboards/slm21-1000/json",
                f"If-None-Match: {etags['1000']}\r\n",
                304,
            ),
        }
        for server, path, extra, expect in cases.values():  # warm-up
            measure(
                server.port,
                path,
                seconds=1,
                clients=args.clients,
                master=server.process.proc.pid,
                extra=extra,
                expect=expect,
            )
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, (server, path, extra, expect) in cases.items():
                samples[name].append(
                    measure(
                        server.port,
                        path,
                        seconds=args.seconds,
                        clients=args.clients,
                        master=server.process.proc.pid,
                        extra=extra,
                        expect=expect,
                    )
                )
        rps = {name: statistics.median(v[0] for v in values) for name, values in samples.items()}
        cpu = {name: statistics.median(v[1] for v in values) for name, values in samples.items()}
        print(
            f"# leaderboard reads: {args.workers} server workers, {args.clients} clients, "
            f"{args.rounds} x {args.seconds:g}s rounds (median)"
        )
        print(f"body sizes: 40 entries {len(bodies['40'])} B, 1000 entries {len(bodies['1000'])} B")
        print(f"{'case':24s} {'req/s':>9s} {'server CPU ms/req':>18s}")
        for name in cases:
            print(f"{name:24s} {rps[name]:9.0f} {cpu[name]:18.3f}")
        print("ratios (leaderboard / bare): req/s, and capacity = bare CPU per req / ours")
        for label, ours, base in (
            ("40 entries", "leaderboard 40", "bare 40"),
            ("1000 entries", "leaderboard 1000", "bare 1000"),
            ("304 vs bare empty", "leaderboard 1000 304", "bare empty"),
            ("304 vs bare 1000", "leaderboard 1000 304", "bare 1000"),
        ):
            print(
                f"{label:20s} req/s {rps[ours] / rps[base]:5.2f}   "
                f"capacity {cpu[base] / cpu[ours]:5.2f}"
            )

        micro = asgi_in_process(env_file, bodies["40"])
        print("# in-process ASGI, 40 entries (best of 5 x 3000 calls)")
        print(
            f"bare {micro['bare']:.0f} us/req, leaderboard {micro['ours']:.0f} us/req, "
            f"ratio {micro['bare'] / micro['ours']:.2f}"
        )

        bare.stop()
        cold_csv(
            env_file,
            api_port,
            api.process.proc.pid,
            entries=args.cold_entries,
            readers=args.cold_readers,
        )
        worker = Process(
            [*cli_command(), "--env-file", str(env_file), "worker"],
            cwd=tmp,
            env=base_env,
            log=tmp / "worker.log",
        )
        time.sleep(2)  # worker start-up; not part of the measurement
        latency = publish_latency(env_file, api_port, args.latency_runs)
        committed = [c for c, _ in latency]
        visible = [v for _, v in latency]
        print("# upload completion -> published entry, idle worker, default settings")
        print(f"committed: median {statistics.median(committed):.3f}s max {max(committed):.3f}s")
        print(f"visible on /json: median {statistics.median(visible):.3f}s max {max(visible):.3f}s")
    finally:
        for process in (api, bare, worker):
            if process is not None:
                process.stop()


if __name__ == "__main__":
    main()
