"""Bursts of concurrent requests from one token against a real `serve` (2 workers), on SQLite
and PostgreSQL: never a 500 or a dropped connection, anonymous readers unaffected, and real
overload answered with 503 + Retry-After while the database is still blocked."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.helpers.burst import Call, Outcome, fire_burst, writers_blocked
from tests.helpers.factories import bearer, make_user, model_info
from tests.helpers.server import Server
from zerospeech_api.db.engine import Database
from zerospeech_api.errors import BUSY_DETAIL
from zerospeech_api.settings import load_settings

pytestmark = pytest.mark.e2e

BURST = 200


@dataclass
class Target:
    server: Server
    database_url: str
    username: str
    headers: dict[str, str]


@pytest.fixture
def make_target(
    backend: str, make_server: Callable[..., Server], request: pytest.FixtureRequest
) -> Callable[..., Target]:
    """A `serve` with 2 workers on this backend, and a bearer token of a user of it."""

    def factory(**env: str) -> Target:
        values = {f"ZR_{k.upper()}": v for k, v in env.items()}
        if backend == "postgres":
            cluster = request.getfixturevalue("postgres_cluster")
            values["ZR_DATABASE_URL"] = cluster.create_database(f"zr_{uuid.uuid4().hex[:12]}")
        server = make_server(workers=2, env=values)
        settings = load_settings(server.env_file)
        db = Database(settings.database)
        try:
            user = make_user(db, settings)
            headers = bearer(db, settings, user)
        finally:
            db.dispose()
        return Target(server, settings.database, user.username, headers)

    return factory


def _reads_and_writes(target: Target, count: int) -> list[Call]:
    listing = Call("GET", f"/users/{target.username}/models/list", target.headers)
    create = Call(
        "POST", f"/users/{target.username}/models/create", target.headers, json=model_info()
    )
    return [listing if i % 2 else create for i in range(count)]


def _statuses(outcomes: list[Outcome]) -> Counter:
    return Counter(o.status for o in outcomes)


def test_a_burst_from_one_token_gets_answers_not_errors(make_target: Callable[..., Target]) -> None:
    target = make_target()
    calls = _reads_and_writes(target, BURST)
    outcomes, anonymous = fire_burst(
        target.server.url, calls, watch=Call("GET", "/benchmarks/list")
    )
    statuses = _statuses(outcomes)
    # Every request is answered: done, or (past what the server takes in its queue time) a
    # 503 that says when to come back; never a 500, a dropped connection or a timeout.
    assert set(statuses) <= {200, 503}, [o for o in outcomes if o.status not in (200, 503)][:3]
    assert statuses[200] > 0
    assert all(o.retry_after and int(o.retry_after) >= 1 for o in outcomes if o.status == 503)
    # The anonymous reader is another client: it is never refused or failed.
    assert anonymous and _statuses(anonymous) == Counter({200: len(anonymous)})
    # Every acknowledged write is there, and nothing else: a 503 did nothing.
    created = sum(
        1 for o, c in zip(outcomes, calls, strict=True) if c.method == "POST" and o.status == 200
    )
    with target.server.client() as client:
        listed = client.get(f"/users/{target.username}/models/list", headers=target.headers)
    assert len(listed.json()["models"]) == created
    assert "Traceback" not in target.server.process.output()


def test_overload_is_a_quick_503_with_retry_after(make_target: Callable[..., Target]) -> None:
    # Short waits so the test is quick; the defaults (5 s) behave the same, only later.
    target = make_target(db_wait_seconds="1", queue_seconds="1")
    calls = _reads_and_writes(target, 60)
    with writers_blocked(target.database_url, "models"):
        # All answered while the lock is still held: the server gave up waiting by itself.
        outcomes, _ = fire_burst(target.server.url, calls)
        writes = [o for o, c in zip(outcomes, calls, strict=True) if c.method == "POST"]
        reads = [o for o, c in zip(outcomes, calls, strict=True) if c.method == "GET"]
    assert _statuses(writes) == Counter({503: len(writes)}), writes[:3]
    assert all(o.retry_after and int(o.retry_after) >= 1 for o in writes)
    assert all(BUSY_DETAIL in o.error for o in writes)
    # Reads never wait for the write lock: they are served or, queued behind the blocked
    # writes of the same token, told to come back; never a 500.
    assert set(_statuses(reads)) <= {200, 503}
    with target.server.client() as client:
        listed = client.get(f"/users/{target.username}/models/list", headers=target.headers)
    assert listed.status_code == 200 and listed.json()["models"] == []
