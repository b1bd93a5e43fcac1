"""Overload tools: fire a burst of concurrent HTTP requests (all released at once) while one
anonymous client keeps reading, and block the database's writers from outside; used by the
burst tests and bench/bench_burst.py."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url


@dataclass(frozen=True)
class Call:
    """One request of a burst."""

    method: str
    path: str
    headers: dict[str, str] | None = None
    json: Any = None


@dataclass(frozen=True)
class Outcome:
    """What one request got: its status (None when no answer came), time and Retry-After."""

    status: int | None
    seconds: float
    retry_after: str | None = None
    error: str = ""


def _send(client: httpx.Client, call: Call) -> Outcome:
    start = time.perf_counter()
    try:
        response = client.request(call.method, call.path, headers=call.headers, json=call.json)
    except httpx.HTTPError as exc:
        return Outcome(None, time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}")
    return Outcome(
        response.status_code,
        time.perf_counter() - start,
        response.headers.get("retry-after"),
        response.text[:200] if response.status_code >= 400 else "",
    )


def fire_burst(
    url: str, calls: Sequence[Call], *, watch: Call | None = None, timeout: float = 120
) -> tuple[list[Outcome], list[Outcome]]:
    """Send every call at once (one thread and one connection each, released together), and
    repeat `watch` from one more client until the burst is answered. Returns the outcomes of
    the calls (in order) and of the watcher's requests."""
    barrier = threading.Barrier(len(calls) + 1)
    done = threading.Event()
    watched: list[Outcome] = []

    def one(client: httpx.Client, call: Call) -> Outcome:
        barrier.wait()
        return _send(client, call)

    def watcher() -> None:
        with httpx.Client(base_url=url, timeout=timeout) as client:
            while not done.is_set():
                watched.append(_send(client, watch))  # type: ignore[arg-type]

    clients = [httpx.Client(base_url=url, timeout=timeout) for _ in calls]
    watcher_thread = threading.Thread(target=watcher) if watch else None
    try:
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            futures = [pool.submit(one, c, call) for c, call in zip(clients, calls, strict=True)]
            barrier.wait(timeout=timeout)
            if watcher_thread:
                watcher_thread.start()
            outcomes = [future.result() for future in futures]
    finally:
        done.set()
        if watcher_thread and watcher_thread.is_alive():
            watcher_thread.join()
        for client in clients:
            client.close()
    return outcomes, watched


@contextmanager
def writers_blocked(database_url: str, table: str) -> Iterator[None]:
    """Hold what a long admin transaction would: SQLite's one write lock, or on PostgreSQL a
    lock on `table` that lets reads pass and makes inserts wait."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        connection = sqlite3.connect(url.database or "", isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database
    ) as connection:
        connection.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE".encode())
        yield
        connection.rollback()
