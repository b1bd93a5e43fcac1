"""Fixtures: settings over a temporary data folder, databases (SQLite and PostgreSQL), apps,
in-process clients, the CLI in-process and real `serve` processes."""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.helpers.cli import cli_env_file, invoke_cli
from tests.helpers.postgres import PostgresCluster, pg_bin
from tests.helpers.server import Server, init_data, serve_env
from zerospeech_api.app import create_app
from zerospeech_api.db.engine import Database
from zerospeech_api.db.migrate import upgrade
from zerospeech_api.settings import Settings

# Cheap argon2 in tests that are not about hashing (the real parameters are tested and benched).
FAST_HASH = {"argon2_time_cost": 1, "argon2_memory_kib": 8192}

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def missing_tool(message: str) -> None:
    """A system tool is missing: skip on a laptop, fail in CI (CI=true), where .ci/run has it."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI must have it: .ci/run installs it)")
    pytest.skip(f"{message} (.ci/run installs it)")


def require_binary(name: str) -> str:
    """The path of executable `name` (nginx, chromium, systemd-analyze...), see `missing_tool`."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        missing_tool(f"{name} is not installed")
    return str(path)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    if pg_bin() is None:
        missing_tool("PostgreSQL is not installed")
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of a test: every database test runs on both."""
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL on each backend (for tests of migrations and the engine)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'zerospeech.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database(f"zr_{uuid.uuid4().hex[:12]}")


def _migrate_with_builtin_rows(url: str) -> None:
    from zerospeech_api.builtin_rows import ensure_builtin_rows

    database = Database(url)
    try:
        upgrade(database.engine)
        with database.transaction() as session:
            ensure_builtin_rows(session=session)
    finally:
        database.dispose()  # SQLite checkpoints its WAL into the file when the last one closes


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file with the built-in rows, migrated once per test session."""
    path = tmp_path_factory.mktemp("template") / "zerospeech.db"
    _migrate_with_builtin_rows(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_cluster: PostgresCluster) -> str:
    """A migrated PostgreSQL template database, migrated once per test session."""
    name = "zr_template"
    _migrate_with_builtin_rows(postgres_cluster.create_database(name))
    return name


@pytest.fixture
def migrated_database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database with the built-in rows: a copy of the session's template, which is
    much cheaper than migrating every test's database."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "zerospeech.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    name = request.getfixturevalue("postgres_template")
    return cluster.create_database(f"zr_{uuid.uuid4().hex[:12]}", template=name)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings over this test's temporary data folder, with overrides."""

    def factory(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "secret_key": secrets.token_urlsafe(48),
            "base_url": "http://testserver",
            **FAST_HASH,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return factory


@pytest.fixture
def settings(make_settings: Callable[..., Settings], migrated_database_url: str) -> Settings:
    return make_settings(database_url=migrated_database_url)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    """The migrated database of `settings` with the built-in rows."""
    database = Database(settings.database)
    yield database
    database.dispose()


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """In-process client (unit level); the e2e tests use `server`."""
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start real `serve` processes over a temporary data folder; all stopped at the end."""
    started: list[Server] = []

    def factory(
        *, workers: int = 2, env: dict[str, str] | None = None, init: bool = True, **kwargs: object
    ) -> Server:
        env_file = serve_env(tmp_path, env, name=f"server-{len(started)}.env")
        if init:
            init_data(env_file)
        server = Server(env_file, workers=workers, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def cli_env_extra() -> dict[str, str]:
    """Extra ZR_ settings for `run_cli`'s .env (a test module overrides this fixture)."""
    return {}


@pytest.fixture
def run_cli(
    settings: Settings, db: Database, tmp_path: Path, cli_env_extra: dict[str, str]
) -> Callable[..., Result]:
    """Run `zerospeech-api --env-file <this test's .env> ARGS...` in this process against the
    test's database and data folder; click's result."""
    env_file = cli_env_file(tmp_path / "cli.env", settings, cli_env_extra)

    def invoke(*args: str, input: str | None = None) -> Result:
        return invoke_cli(env_file, *args, input=input)

    return invoke


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`--dist loadgroup`), the tests that run the built pyz share one
    worker, so the pyz is built once; every other test is spread over the workers."""
    for item in items:
        if "built" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("pyz"))
