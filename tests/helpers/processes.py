"""Real processes for tests: free ports, start, wait until they answer, always stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


T = TypeVar("T")


def at_once(function: Callable[[], T], times: int, *, timeout: float = 120) -> list[T]:
    """`function` run by `times` threads released together; their results, or the first error."""
    barrier = threading.Barrier(times)

    def released() -> T:
        barrier.wait(timeout)
        return function()

    with ThreadPoolExecutor(times) as pool:
        futures = [pool.submit(released) for _ in range(times)]
        return [future.result(timeout) for future in futures]


def wait_for(predicate: Callable[[], Any], *, timeout: float = 60, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy (returns it); AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def cli_command() -> list[str]:
    """How to run the CLI from the source tree (the pyz tests use their own)."""
    return [sys.executable, "-m", "zerospeech_api"]


class Process:
    """A child process with its output in a file, stopped in `stop()` whatever happens."""

    def __init__(self, argv: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.argv, self.cwd, self.env, self.log_path = list(argv), cwd, env, log
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the process and its group (a server and its workers)."""
        return group_cpu_seconds(self.proc.pid)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM the process group, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Reap anything left in the group (gunicorn workers, supervisord children).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        return self.proc.returncode


def wait_until_responds(url: str, process: Process | None = None, timeout: float = 30) -> None:
    """Poll `url` until it answers 200; fail with the process output if it dies or times out."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(
                f"process exited early ({process.proc.returncode}):\n{process.output()[-4000:]}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last_error = repr(exc)
        time.sleep(0.1)
    output = process.output()[-4000:] if process else ""
    raise RuntimeError(f"{url} did not answer in {timeout}s ({last_error}):\n{output}")


def process_alive(pid: int) -> bool:
    """True if `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat_line = handle.read()
    except OSError:
        return False
    return stat_line[stat_line.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


# --- what /proc says about a running process tree (Linux) ---------------------------------------
# The shared object of uvicorn's fast HTTP parser, mapped by a process that loaded httptools.
HTTPTOOLS_SO = "/httptools/parser/parser."


def _stat_fields(pid: int | str) -> list[str]:
    """/proc/<pid>/stat after the command: state(0) ppid(1) pgrp(2) ... utime(11) stime(12)."""
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """The pids of the live children of `pid` (a gunicorn master's workers), sorted."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if int(_stat_fields(entry.name)[1]) == pid:
                    found.append(int(entry.name))
            except OSError:
                continue
    return sorted(found)


def worker_maps(master: int) -> list[str]:
    """/proc/<pid>/maps (what is loaded) of each child of `master`."""
    maps = []
    for pid in children(master):
        try:
            maps.append(Path(f"/proc/{pid}/maps").read_text())
        except OSError:
            continue
    return maps


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by the live processes of a process group."""
    total = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = _stat_fields(entry.name)
            except OSError:
                continue
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    """The peak resident memory (VmHWM) of `pid`, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
