"""Upload throughput and worker memory: a 1 GiB archive in zrc-sized parts through `serve`.

Baseline, measured in the same run under the same gunicorn + uvicorn worker class and count: a
raw ASGI app that streams the request body to a file and hashes it (MD5) with no form parsing,
no auth, no database. Both receive the same multipart bodies from the same client code, in
alternating rounds; the figure is MB/s and the ratio serve / baseline (goal >= 0.8). `serve` also
fsyncs each part before acknowledging it (crash safety); a baseline variant that fsyncs too is
shown for reference. Memory: VmHWM (peak RSS) of each gunicorn worker of a fresh server after a
small and after a large archive: it must not grow with archive size.

    python bench/bench_upload.py [--size-mib 1024] [--part-bytes 500000000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    HttpProcess,
    Server,
    cli,
    machine,
    print_table,
    start_gunicorn,
    start_serve,
    temp_folder,
)

from tests.helpers.processes import children, peak_rss_mib

USERNAME = "bench_uploader"
PASSWORD = "bench upload password 123"
CHUNK = 1 << 20


# --- the baseline: raw ASGI, body -> file + MD5 -----------------------------------------------
def _write_all(out, digest, blocks: list[bytes]) -> None:
    for block in blocks:
        out.write(block)
        digest.update(block)


async def raw_app(scope: dict, receive, send) -> None:
    """Stream the body to a temp file while hashing it; answer its size and MD5 as JSON.

    `?mode=inline` writes and hashes on the event loop; the default hands 1 MiB batches to a
    thread with one batch in flight (what a careful minimal endpoint does); `fsync=1` also
    fsyncs the file before answering."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    query = scope.get("query_string", b"").decode()
    inline, fsync = "mode=inline" in query, "fsync=1" in query
    loop = asyncio.get_running_loop()
    digest = hashlib.md5()
    size = 0
    fd, path = tempfile.mkstemp(dir=os.environ.get("BENCH_UPLOAD_DIR") or None)
    with os.fdopen(fd, "wb") as out:
        batch: list[bytes] = []
        batched = 0
        pending = None
        while True:
            message = await receive()
            body = message.get("body", b"")
            size += len(body)
            if inline:
                out.write(body)
                digest.update(body)
            else:
                batch.append(body)
                batched += len(body)
                if batched >= CHUNK or not message.get("more_body"):
                    if pending is not None:
                        await pending
                    pending = loop.run_in_executor(None, _write_all, out, digest, batch)
                    batch, batched = [], 0
            if not message.get("more_body"):
                break
        if pending is not None:
            await pending
        if fsync:
            out.flush()
            os.fsync(out.fileno())
    os.unlink(path)
    payload = json.dumps({"size": size, "md5": digest.hexdigest()}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# --- archive and client -----------------------------------------------------------------------
def make_parts(folder: Path, total: int, part_bytes: int) -> tuple[list[dict], str]:
    """Random bytes split as the client splits (`<stem>_<n>.zip` slices); index + whole MD5."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = hashlib.md5()
    index = []
    written, n = 0, 1
    while written < total:
        size = min(part_bytes, total - written)
        part = hashlib.md5()
        name = f"bench_{n}.zip"
        with open(folder / name, "wb") as out:
            left = size
            while left:
                block = os.urandom(min(64 * CHUNK, left))
                out.write(block)
                part.update(block)
                whole.update(block)
                left -= len(block)
        index.append({"filename": name, "filesize": size, "filehash": part.hexdigest()})
        written += size
        n += 1
    return index, whole.hexdigest()


def send_part(http: httpx.Client, url: str, path: Path, headers: dict[str, str]) -> dict:
    with open(path, "rb") as handle:
        response = http.post(url, files={"file": (path.name, handle)}, headers=headers)
    if response.status_code != 200:
        raise SystemExit(f"{url}: {response.status_code} {response.text[:300]}")
    return response.json()


class Uploader:
    """The zrc call sequence against `serve` (login, model, submission, parts)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=600)
        env_file = server.env_file
        cli(
            env_file, "users", "create", USERNAME, "--email", "upload@example.org",
            "--first-name", "B", "--last-name", "B", "--affiliation", "B", "--verified",
            "--admin", "--password-stdin", input=PASSWORD + "\n",
        )  # fmt: skip
        token = self.http.post(
            "/auth/login",
            data={"grant_type": "password", "username": USERNAME, "password": PASSWORD},
        ).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}
        model = self.http.post(
            f"/users/{USERNAME}/models/create",
            params={"author_name": "B"},
            json={"description": "bench", "created_at": "2024-01-01T00:00:00"},
            headers=self.headers,
        )
        self.model_id = model.json()["model_id"]

    def upload(self, folder: Path, index: list[dict], archive_md5: str) -> tuple[float, float]:
        """Seconds to send every part, and seconds until the server says `uploaded`."""
        created = self.http.post(
            f"/users/{USERNAME}/submissions/create",
            json={
                "model_id": self.model_id, "benchmark_id": "test-challenge",
                "filename": "bench.zip", "hash": archive_md5, "has_scores": False,
                "multipart": True, "author_label": None, "index": index, "leaderboard": "",
            },
            headers=self.headers,
        )  # fmt: skip
        sid = created.json()["submission_id"]
        url = f"/submissions/{sid}/content/add"
        start = time.perf_counter()
        for entry in index:
            send_part(
                self.http, f"{url}?part_name={entry['filename']}", folder / entry["filename"],
                self.headers,
            )  # fmt: skip
        sent = time.perf_counter() - start
        while (status := self.http.get(f"/submissions/{sid}/content/status").json()["status"]) == (
            "uploading"
        ):
            time.sleep(0.05)
        joined = time.perf_counter() - start
        if status != "uploaded":
            raise SystemExit(f"submission ended {status}")
        self.http.delete(f"/submissions/{sid}", headers=self.headers)  # free the disk
        return sent, joined

    def close(self) -> None:
        self.http.close()


def baseline(server: HttpProcess, folder: Path, index: list[dict], query: str = "") -> float:
    with httpx.Client(base_url=server.url, timeout=600) as http:
        start = time.perf_counter()
        for entry in index:
            answer = send_part(http, f"/upload?{query}", folder / entry["filename"], {})
            assert answer["size"] > entry["filesize"]  # the whole multipart body
        return time.perf_counter() - start


# --- memory -------------------------------------------------------------------------------------
def memory_run(root: Path, parts: Path, index: list[dict], md5: str, workers: int) -> list[float]:
    """Peak RSS of each worker of a fresh `serve` after one upload of these parts."""
    folder = Path(tempfile.mkdtemp(prefix="mem-", dir=root))
    server = start_serve(folder, workers=workers, env={"ZR_LOG_LEVEL": "warning"})
    try:
        uploader = Uploader(server)
        uploader.upload(parts, index, md5)
        uploader.close()
        return [peak_rss_mib(pid) for pid in children(server.process.proc.pid)]
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="Archive size (MiB).")
    parser.add_argument("--small-mib", type=int, default=32, help="Small archive for memory.")
    parser.add_argument("--part-bytes", type=int, default=500_000_000, help="Client part size.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds per server.")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of both.")
    args = parser.parse_args()
    total = args.size_mib * (1 << 20)

    print(f"# upload bench: {args.size_mib} MiB in parts of {args.part_bytes:,} bytes; {machine()}")
    with temp_folder("zr-bench-upload-") as tmp:
        root = Path(tmp)
        index, md5 = make_parts(root / "parts", total, args.part_bytes)
        os.environ["BENCH_UPLOAD_DIR"] = str(root)  # the baseline writes on the same disk
        (root / "serve").mkdir()
        serve = start_serve(root / "serve", workers=args.workers, env={"ZR_LOG_LEVEL": "warning"})
        bare = start_gunicorn("bench_upload:raw_app", folder=root, workers=args.workers)
        try:
            uploader = Uploader(serve)
            warm_index, warm_md5 = make_parts(root / "warm", 8 << 20, 4 << 20)
            uploader.upload(root / "warm", warm_index, warm_md5)
            baseline(bare, root / "warm", warm_index)
            variants = {"raw": "", "raw-inline": "mode=inline", "raw+fsync": "fsync=1"}
            times: dict[str, list[float]] = {name: [] for name in (*variants, "serve")}
            joins = []
            for _ in range(args.rounds):
                for name, query in variants.items():
                    os.sync()  # each run starts without the previous run's dirty pages
                    times[name].append(baseline(bare, root / "parts", index, query))
                os.sync()
                sent, joined = uploader.upload(root / "parts", index, md5)
                times["serve"].append(sent)
                joins.append(joined - sent)
            uploader.close()
        finally:
            serve.stop()
            bare.stop()
        mb = total / 1e6
        best = {name: min(values) for name, values in times.items()}
        base = best["raw"]
        rows = [
            ("raw ASGI: body -> file + MD5 in a thread (baseline)", mb / base, 1.0),
            ("raw ASGI: body -> file + MD5 on the event loop", mb / best["raw-inline"],
             base / best["raw-inline"]),
            ("raw ASGI, thread, + fsync", mb / best["raw+fsync"], base / best["raw+fsync"]),
            ("serve: content/add (parse, verify, fsync, record)", mb / best["serve"],
             base / best["serve"]),
        ]  # fmt: skip
        print_table(("endpoint", "MB/s", "ratio vs baseline"), rows)
        print(f"join after the last part (background copy + MD5): {min(joins):.2f} s")
        for name, values in times.items():
            print(f"rounds {name} (s):", [round(x, 2) for x in values])
        # Other load on the machine moves whole rounds; the ratio within a round moves less.
        per_round = [r / o for r, o in zip(times["raw"], times["serve"], strict=True)]
        print("ratio serve/baseline per round:", [round(x, 2) for x in per_round])

        small_index, small_md5 = make_parts(root / "small", args.small_mib << 20, args.part_bytes)
        small = memory_run(root, root / "small", small_index, small_md5, args.workers)
        large = memory_run(root, root / "parts", index, md5, args.workers)
        print_table(
            ("archive", "worker peak RSS (VmHWM, MiB)"),
            [
                (f"{args.small_mib} MiB", ", ".join(f"{v:.1f}" for v in small)),
                (f"{args.size_mib} MiB", ", ".join(f"{v:.1f}" for v in large)),
            ],
        )
        ratio = sorted(per_round)[len(per_round) // 2]
        verdict = "met" if ratio >= 0.8 else "NOT met"
        print(f"goal: median per-round ratio >= 0.8 -> {verdict} ({ratio:.2f})")


if __name__ == "__main__":
    main()
