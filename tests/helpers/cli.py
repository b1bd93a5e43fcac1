"""The CLI in tests, one way of each kind: `invoke_cli` runs a command in this process (click's
runner: fast, for what a command does to the database and folders), `cli_process` runs it as
its own process (for what needs one: exit codes, signals, output streams, the environment).
The pyz tests run the built pyz itself (tests.helpers.pyz)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from click.testing import CliRunner, Result

from tests.helpers.processes import cli_command
from zerospeech_api.settings import Settings


def cli_env_file(path: Path, settings: Settings, extra: dict[str, str] | None = None) -> Path:
    """A .env at `path` for the CLI over `settings`' data folder, database and secret."""
    values = {
        "ZR_DATA_DIR": str(settings.data_dir),
        "ZR_DATABASE_URL": settings.database,
        "ZR_SECRET_KEY": settings.secret_key.get_secret_value(),
        **(extra or {}),
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def invoke_cli(env_file: Path | None, *args: str, input: str | None = None) -> Result:
    """`zerospeech-api [--env-file ENV_FILE] ARGS...` in this process; click's result."""
    from zerospeech_api.cli import main

    options = ["--env-file", str(env_file)] if env_file is not None else []
    return CliRunner().invoke(main, [*options, *args], input=input)


def cli_process(
    cwd: Path,
    *args: str,
    env_file: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
    check: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`zerospeech-api [--env-file ENV_FILE] ARGS...` as a process in `cwd`, with this
    environment less its ZR_ variables (the test decides the settings) plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
    options = ["--env-file", str(env_file)] if env_file is not None else []
    return subprocess.run(
        [*cli_command(), *options, *args],
        cwd=cwd,
        env={**base, **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )
