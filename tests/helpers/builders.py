"""Builders for test data written straight to the database (no HTTP), and auth headers."""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from zerospeech_api.accounts.sessions import open_session
from zerospeech_api.db.engine import Database
from zerospeech_api.db.tables import User
from zerospeech_api.security.passwords import hash_password, hasher
from zerospeech_api.settings import Settings

DEFAULT_PASSWORD = "correct horse battery staple"
_counter = itertools.count(1)


def make_user(
    db: Database,
    settings: Settings,
    *,
    username: str | None = None,
    password: str = DEFAULT_PASSWORD,
    verified: bool = True,
    active: bool = True,
    admin: bool = False,
    email: str | None = None,
) -> User:
    """Insert a user with an argon2id hash of `password`."""
    n = next(_counter)
    username = username or f"user{n}"
    ph = hasher(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    with db.transaction() as session:
        user = User(
            username=username,
            email=email or f"{username}@example.org",
            first_name="Ada",
            last_name="Lovelace",
            affiliation="Analytical Engines Ltd",
            password_hash=hash_password(ph, password),
            verified=verified,
            active=active,
            admin=admin,
        )
        session.add(user)
        session.flush()
        session.expunge(user)
    return user


def bearer(db: Database, settings: Settings, user: User) -> dict[str, str]:
    """An Authorization header for a fresh session of `user`."""
    with db.transaction() as session:
        token, _ = open_session(session=session, settings=settings, user=session.merge(user))
    return {"Authorization": f"Bearer {token}"}


def make_benchmark(db: Database, benchmark_id: str | None = None, **options: Any) -> str:
    """Create an open benchmark through the service (options as in `create_benchmark`; by
    default it starts today and is evaluated by the built-in `scores` evaluator)."""
    from zerospeech_api.benchmarks.service import create_benchmark

    benchmark_id = benchmark_id or f"bench-{secrets.token_hex(3)}"
    with db.transaction() as session:
        create_benchmark(
            session=session,
            benchmark_id=benchmark_id,
            label=options.pop("label", f"Benchmark {benchmark_id}"),
            url=options.pop("url", "https://example.org"),
            **options,
        )
    return benchmark_id
