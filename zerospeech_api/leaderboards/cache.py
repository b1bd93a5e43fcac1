"""Compiled leaderboards cached per process, keyed by what they depend on in the database.

A read costs one small version query at most every `recheck_seconds` per leaderboard and
process; in between the cached bytes are served as they are. The version covers the
leaderboard row (its `updated_at` is bumped by every publish, import and rebuild) and its entries
(count and newest `updated_at`, which also catches entries removed by a cascade), so any change
of any entry produces new bytes and a new ETag.

Single flight, bounded memory: readers that find a leaderboard changed queue on a lock of its
own, and the first compiles while the others then find the new version already there, so a
process compiles each version once however many readers arrive together (likewise its CSV). A
process keeps one version per leaderboard, as bytes only: the JSON body, where each entry sits
in it, and the CSV once asked for; no Python copy of the entries.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from sqlalchemy.orm import Session

from zerospeech_api.db.engine import Database
from zerospeech_api.errors import NotFound
from zerospeech_api.leaderboards import service


@dataclass
class Compiled:
    """One compiled leaderboard: JSON bytes, strong ETag, entry spans, CSV made on first use."""

    label: str
    version: service.Version
    body: bytes
    etag: str
    spans: dict[str, tuple[int, int]]  # submission id -> its entry's bytes in `body`
    checked_at: float
    _csv: bytes | None = field(default=None, repr=False)
    _csv_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    async def csv_off_loop(self) -> bytes:
        """The CSV; its one build runs in a worker thread, off the event loop."""
        return self._csv if self._csv is not None else await anyio.to_thread.run_sync(self.csv)

    def csv(self) -> bytes:
        """The CSV, built once: concurrent first readers wait for the one build."""
        if self._csv is None:
            with self._csv_lock:
                if self._csv is None:
                    self._csv = service.to_csv(json.loads(self.body)).encode("utf-8")
        return self._csv

    def csv_etag(self) -> str:
        return self.etag[:-1] + '-csv"'

    def entry(self, entry_id: str) -> bytes | None:
        """The JSON of the ranked entry whose `submission_id` is `entry_id`."""
        span = self.spans.get(entry_id)
        return self.body[span[0] : span[1]] if span else None


def encode(document: Any) -> bytes:
    """Compact, strict UTF-8 JSON (HTML in the data stays data: served as application/json only).

    `allow_nan=False`: what a browser's JSON.parse refuses is never sent (compile cleans it).
    """
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def etag_of(body: bytes) -> str:
    """Strong ETag of a response body."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def build(label: str, version: service.Version, document: dict[str, Any]) -> Compiled:
    """The cached form of a compiled document: `encode(document)`, noting each entry's span."""
    head = b'{"last_modified":' + encode(document["last_modified"]) + b',"data":['
    parts = [head]
    spans: dict[str, tuple[int, int]] = {}
    offset = len(head)
    for n, entry in enumerate(document["data"]):
        if n:
            parts.append(b",")
            offset += 1
        chunk = encode(entry)
        if entry.get("submission_id") is not None:
            spans.setdefault(str(entry["submission_id"]), (offset, offset + len(chunk)))
        parts.append(chunk)
        offset += len(chunk)
    parts.append(b"]}")
    body = b"".join(parts)
    return Compiled(label, version, body, etag_of(body), spans, time.monotonic())


class LeaderboardCache:
    """Thread-safe per-process cache of compiled public leaderboards."""

    def __init__(self, db: Database, *, recheck_seconds: float) -> None:
        self.db = db
        self.recheck_seconds = recheck_seconds
        self._items: dict[str, Compiled] = {}
        self._locks: dict[str, threading.Lock] = {}  # one per existing label, made on demand
        self._locks_lock = threading.Lock()

    def fresh(self, label: str) -> Compiled | None:
        """The cached leaderboard if checked recently enough (no database access)."""
        item = self._items.get(label)
        if item is not None and time.monotonic() - item.checked_at < self.recheck_seconds:
            return item
        return None

    def load(self, label: str) -> Compiled:
        """Check the version in the database; recompile only if it changed (single flight)."""
        with self.db.session(read_only=True) as session:
            item = self._cached(label, self._version(session, label))
        if item is not None:
            return item
        with self._locks_lock:
            lock = self._locks.setdefault(label, threading.Lock())
        with lock:
            with self.db.session(read_only=True) as session:
                version = self._version(session, label)
                # Whoever waited here finds the version the first reader compiled meanwhile.
                item = self._cached(label, version)
                if item is not None:
                    return item
                leaderboard = service.get_leaderboard(session=session, label=label)
                document = service.compile_leaderboard(session=session, leaderboard=leaderboard)
            item = build(label, version, document)
            self._items[label] = item  # the previous version goes when its last reader is done
            return item

    def _version(self, session: Session, label: str) -> service.Version:
        version = service.leaderboard_version(session=session, label=label)
        if version is None:
            self._items.pop(label, None)
            raise NotFound(service.NO_LEADERBOARD.format(label=label))
        return version

    def _cached(self, label: str, version: service.Version) -> Compiled | None:
        item = self._items.get(label)
        if item is None or item.version != version:
            return None
        item.checked_at = time.monotonic()
        return item

    async def compiled(self, label: str) -> Compiled:
        """The public leaderboard as it is now: from memory if checked within
        `recheck_seconds`, else checked (and compiled if changed) in a worker thread."""
        item = self.fresh(label)
        if item is None:
            item = await anyio.to_thread.run_sync(self.load, label)
        return item

    async def entry(self, label: str, entry_id: str) -> bytes:
        """The JSON of one ranked entry, by its submission id (NotFound if none)."""
        body = (await self.compiled(label)).entry(entry_id)
        if body is None:
            raise NotFound(service.NO_ENTRY.format(entry_id=entry_id, label=label))
        return body
