"""The built pyz for e2e tests: build once from a snapshot of the sources, run it, load it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers.processes import wait_for

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("build.sh", "packaging", "pyproject.toml", "README.md", "zerospeech_api")
CACHE = ROOT / "dist" / "test-cache"


@dataclass(frozen=True)
class Built:
    pyz: Path
    sources: Path


def _snapshot(dest: Path) -> str:
    """Copy what build.sh reads into `dest`; returns a key of its content (and this Python)."""
    digest = hashlib.sha256(sys.version.encode())
    for item in SOURCES:
        source = ROOT / item
        paths = [source] if source.is_file() else sorted(source.rglob("*"))
        for path in paths:
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            relative = path.relative_to(ROOT)
            data = path.read_bytes()
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            shutil.copymode(path, target)
            digest.update(str(relative).encode() + b"\0" + data + b"\0")
    return digest.hexdigest()


def _build(sources: Path, output: Path, *args: str, env: dict[str, str] | None = None) -> None:
    """build.sh of a source snapshot into `output`; fails the test with its output."""
    argv = [str(sources / "build.sh"), "--output", str(output), *args]
    result = subprocess.run(
        argv,
        env={**(env or os.environ), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def build_pyz(sources: Path) -> Built:
    """The pyz of the current sources (snapshot into `sources`), reused from dist/test-cache."""
    key = _snapshot(sources)
    pyz = CACHE / f"zerospeech-api-{key[:16]}.pyz"
    if not pyz.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        # Keep a few recent builds: another test session may still be using one.
        for old in sorted(CACHE.glob("zerospeech-api-*.pyz"), key=os.path.getmtime)[:-3]:
            old.unlink(missing_ok=True)
        _build(sources, pyz)  # build.sh renames into place: never a half-written pyz
    return Built(pyz, sources)


def pyz_env(shiv_root: Path, **extra: str) -> dict[str, str]:
    """This environment without ZR_/SHIV_ variables, extracting into `shiv_root`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZR_", "SHIV_"))}
    return {**env, "SHIV_ROOT": str(shiv_root), **extra}


def run_pyz(
    pyz: Path, *args: str, cwd: Path, env: dict[str, str], input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the pyz once with this interpreter; output captured as text."""
    return subprocess.run(
        [sys.executable, str(pyz), *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )


class Load:
    """GET requests from a few threads until stopped (bounded in count and time).

    `keep_alive=False` opens a connection per request. `retries` resends a request whose
    connection failed (refused, reset, closed early), as the shipped nginx config does
    (proxy_next_upstream error, 2 tries); `retried` counts them.
    """

    def __init__(
        self,
        url: str,
        path: str = "/health",
        threads: int = 3,
        *,
        keep_alive: bool = True,
        retries: int = 0,
    ) -> None:
        self.url, self.path = url, path
        self.headers = {} if keep_alive else {"Connection": "close"}
        self.retries = retries
        self.ok = self.retried = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _get(self, client: httpx.Client) -> str | None:
        """One request (with its retries); None if it answered 200, else what went wrong."""
        attempt = 0
        while True:
            try:
                response = client.get(self.path)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if attempt == self.retries:
                    return repr(exc)
                attempt += 1
                with self._lock:
                    self.retried += 1
                continue
            except httpx.HTTPError as exc:
                return repr(exc)
            return None if response.status_code == 200 else str(response.status_code)

    def _run(self) -> None:
        deadline = time.monotonic() + 300  # a safety net: __exit__ stops it
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30) as client:
            for _ in range(20_000):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                failure = self._get(client)
                with self._lock:
                    if failure is None:
                        self.ok += 1
                    else:
                        self.failures.append(f"GET {self.path}: {failure}")

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        wait_for(lambda: self.ok >= 20, what="the load to start")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def more(self, n: int = 50) -> None:
        """Let at least n more requests through (the system keeps serving afterwards)."""
        target = self.ok + n
        wait_for(lambda: self.ok >= target, what=f"{n} more answered requests")


# Script text (standard library only, so it also runs inside the pyz): `probe(identity)` forks
# and tells whether the child shares this process's open files of the archive (dev, inode).
FORK_PROBE = """
import os


def descriptors(identity):
    found = []
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) == identity:
                found.append(fd)
        except OSError:  # the listing's own descriptor
            pass
    return found


def probe(identity, child_reads=lambda: True):
    fds = descriptors(identity)
    assert fds, "nothing holds the archive open"
    before = {fd: os.lseek(fd, 0, os.SEEK_CUR) for fd in fds}
    assert all(before.values()), before
    pid = os.fork()
    if pid == 0:
        status = 0 if child_reads() else 3
        for fd in fds:
            os.lseek(fd, before[fd] // 2, os.SEEK_SET)  # a worker reading elsewhere in the file
        os._exit(status)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, "the child misread the archive"
    return "shared" if any(os.lseek(fd, 0, os.SEEK_CUR) != before[fd] for fd in fds) else "private"
"""
