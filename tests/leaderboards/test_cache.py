"""The per-process leaderboard cache over a real database (SQLite and PostgreSQL): one compile
per change however many readers arrive together, one CSV build, bytes equal to the document."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import pytest

from tests.helpers.factories import make_benchmark, make_leaderboard, realistic_entry
from zerospeech_api.errors import NotFound
from zerospeech_api.leaderboards import service
from zerospeech_api.leaderboards.cache import LeaderboardCache, encode

READERS = 8


def counted(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Count calls of the real `service.<name>`; each call lingers a little so that readers
    arriving together overlap with it (as they do with a big leaderboard)."""
    real: Callable[..., Any] = getattr(service, name)
    calls: list[int] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(service, name, wrapper)
    return calls


def together(function: Callable[[], Any]) -> list[Any]:
    """Call `function` from READERS threads released at the same moment."""
    start = threading.Barrier(READERS)

    def one() -> Any:
        start.wait()
        return function()

    with ThreadPoolExecutor(READERS) as pool:
        return list(pool.map(lambda _: one(), range(READERS)))


def change(db, entries: list[dict]) -> None:
    with db.transaction() as session:
        service.import_entries(session=session, label="lb", entries=entries)


def test_concurrent_readers_of_a_changed_leaderboard_compile_it_once(db, monkeypatch) -> None:
    make_leaderboard(db, "lb", make_benchmark(db))
    change(db, [realistic_entry(n) for n in range(50)])
    cache = LeaderboardCache(db, recheck_seconds=0)
    compiles = counted(monkeypatch, "compile_leaderboard")
    first = together(lambda: cache.load("lb"))
    assert len(compiles) == 1
    assert all(item is first[0] for item in first)
    assert len(together(lambda: cache.load("lb"))) == READERS and len(compiles) == 1
    change(db, [realistic_entry(n) for n in range(51)])
    second = together(lambda: cache.load("lb"))
    assert len(compiles) == 2
    assert all(item is second[0] for item in second) and second[0] is not first[0]
    assert len(json.loads(second[0].body)["data"]) == 51


def test_concurrent_first_csv_reads_build_it_once(db, monkeypatch) -> None:
    make_leaderboard(db, "lb", make_benchmark(db))
    change(db, [realistic_entry(n) for n in range(50)])
    item = LeaderboardCache(db, recheck_seconds=0).load("lb")
    builds = counted(monkeypatch, "to_csv")
    bodies = together(lambda: item.csv())
    assert len(builds) == 1 and len(set(bodies)) == 1
    assert bodies[0].count(b"\r\n") == 51


def test_cached_bytes_are_the_document_and_entries_are_found_in_them(db) -> None:
    make_leaderboard(db, "lb", make_benchmark(db))
    entries = [realistic_entry(n) for n in range(5)] + [{"scores": {}, "description": "no id"}]
    change(db, entries)
    item = LeaderboardCache(db, recheck_seconds=0).load("lb")
    with db.session(read_only=True) as session:
        leaderboard = service.get_leaderboard(session=session, label="lb")
        document = service.compile_leaderboard(session=session, leaderboard=leaderboard)
    assert item.body == encode(document)
    for ranked in document["data"][:5]:
        assert json.loads(item.entry(ranked["submission_id"])) == ranked  # type: ignore[arg-type]
    assert item.entry("None") is None and item.entry("nope") is None


def test_the_async_reads_serve_from_memory_and_name_what_is_missing(db) -> None:
    benchmark = make_benchmark(db)
    make_leaderboard(db, "lb", benchmark)
    change(db, [realistic_entry(n) for n in range(3)])
    cache = LeaderboardCache(db, recheck_seconds=3600)

    async def main() -> None:
        first = await cache.compiled("lb")
        assert await cache.compiled("lb") is first  # not checked again within recheck_seconds
        assert await first.csv_off_loop() == first.csv()
        entry = json.loads(first.body)["data"][0]
        assert json.loads(await cache.entry("lb", entry["submission_id"])) == entry
        with pytest.raises(NotFound, match="no entry nope on leaderboard lb"):
            await cache.entry("lb", "nope")
        with pytest.raises(NotFound, match="no leaderboard missing"):
            await cache.compiled("missing")

    anyio.run(main)
    with db.session(read_only=True) as session:
        leaderboard, count = service.counted_leaderboard(session=session, label="lb")
        assert (leaderboard.label, count) == ("lb", 3)
        assert [
            (lb.label, n)
            for lb, n in service.benchmark_leaderboards(session=session, benchmark_id=benchmark)
        ] == [("lb", 3)]
        with pytest.raises(NotFound, match="no benchmark nope"):
            service.benchmark_leaderboards(session=session, benchmark_id="nope")
