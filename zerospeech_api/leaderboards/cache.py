"""Compiled leaderboards cached per process, keyed by what they depend on in the database.

A read costs one small version query at most every `recheck_seconds` per leaderboard and
process; in between the cached bytes are served as they are. The version covers the
leaderboard row (its `updated_at` is bumped by every publish, import and rebuild) and its entries
(count and newest `updated_at`, which also catches entries removed by a cascade), so any change
of any entry produces new bytes and a new ETag.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from zerospeech_api.db.engine import Database
from zerospeech_api.errors import NotFound
from zerospeech_api.leaderboards import service


@dataclass
class Compiled:
    """One compiled leaderboard: JSON bytes, strong ETag, CSV made on first request."""

    label: str
    version: tuple
    document: dict[str, Any]
    body: bytes
    etag: str
    checked_at: float
    _csv: bytes | None = field(default=None, repr=False)

    @property
    def csv(self) -> bytes:
        if self._csv is None:
            self._csv = service.to_csv(self.document).encode("utf-8")
        return self._csv

    def csv_etag(self) -> str:
        return self.etag[:-1] + '-csv"'


def encode(document: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (HTML in the data stays data: served as application/json only)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def etag_of(body: bytes) -> str:
    """Strong ETag of a response body."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


class LeaderboardCache:
    """Thread-safe per-process cache of compiled public leaderboards."""

    def __init__(self, db: Database, *, recheck_seconds: float) -> None:
        self.db = db
        self.recheck_seconds = recheck_seconds
        self._items: dict[str, Compiled] = {}
        self._lock = threading.Lock()

    def fresh(self, label: str) -> Compiled | None:
        """The cached leaderboard if checked recently enough (no database access)."""
        item = self._items.get(label)
        if item is not None and time.monotonic() - item.checked_at < self.recheck_seconds:
            return item
        return None

    def load(self, label: str) -> Compiled:
        """Check the version in the database; recompile only if it changed."""
        with self.db.session(read_only=True) as session:
            version = service.leaderboard_version(session=session, label=label)
            if version is None:
                self._items.pop(label, None)
                raise NotFound(service.NO_LEADERBOARD.format(label=label))
            item = self._items.get(label)
            now = time.monotonic()
            if item is not None and item.version == version:
                item.checked_at = now
                return item
            leaderboard = service.get_leaderboard(session=session, label=label)
            document = service.compile_leaderboard(session=session, leaderboard=leaderboard)
        body = encode(document)
        item = Compiled(label, version, document, body, etag_of(body), now)
        with self._lock:
            self._items[label] = item
        return item

    def get(self, label: str) -> Compiled:
        return self.fresh(label) or self.load(label)
