"""The server's checks (checks.py): what GET /health answers and what `check` reports."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.helpers.processes import free_port
from zerospeech_api.app import create_app
from zerospeech_api.checks import database_health, problems
from zerospeech_api.db.engine import Database
from zerospeech_api.settings import Settings


def test_health_is_the_database_check(client: TestClient, db: Database) -> None:
    assert client.get("/health").json() == database_health(db=db)
    assert database_health(db=db) == {"status": "ok", "database": db.engine.dialect.name}


def test_a_migrated_database_and_a_writable_data_folder_have_no_problem(
    settings: Settings,
) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    assert problems(settings=settings) == []


def test_each_problem_says_what_fixes_it(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    empty = make_settings(secret_key="", database_url=database_url)  # an empty database
    found = problems(settings=empty)
    assert found[0] == "ZR_SECRET_KEY is not set (run init)"
    assert found[1].startswith("data folder ") and found[1].endswith("does not exist (run init)")
    assert found[2].startswith("database at revision None, code expects ")
    assert found[2].endswith("(run migrate)")


def test_an_unreachable_database_is_named_not_raised(
    make_settings: Callable[..., Settings],
) -> None:
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none?connect_timeout=2"
    settings = make_settings(database_url=url)
    settings.data_dir.mkdir(parents=True)
    assert problems(settings=settings) == ["database unreachable: OperationalError"]
    # The same check behind /health (no lifespan: it would reach for the database too).
    response = TestClient(create_app(settings), raise_server_exceptions=False).get("/health")
    assert response.status_code >= 500 and set(response.json()) == {"detail"}
