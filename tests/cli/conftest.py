"""The CLI in-process (click's runner) against the test's database and data folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from zerospeech_api.cli import main
from zerospeech_api.db.engine import Database
from zerospeech_api.settings import Settings


@pytest.fixture
def cli_env_extra() -> dict[str, str]:
    """Extra ZR_ settings for the CLI's .env (a test module overrides this fixture)."""
    return {}


@pytest.fixture
def run_cli(
    settings: Settings, db: Database, tmp_path: Path, cli_env_extra: dict[str, str]
) -> Callable[..., Result]:
    """Run `zerospeech-api --env-file <this test's .env> ARGS...` and return click's result."""
    env_file = tmp_path / "cli.env"
    values = {
        "ZR_DATA_DIR": str(settings.data_dir),
        "ZR_DATABASE_URL": settings.database,
        "ZR_SECRET_KEY": settings.secret_key.get_secret_value(),
        **cli_env_extra,
    }
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, ["--env-file", str(env_file), *args], input=input)

    return invoke
