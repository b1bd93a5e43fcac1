"""The command line imports a command's module only when it runs: `--help` lists every command
from zerospeech_api.cli.COMMANDS, and light commands stay clear of the heavy libraries."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

import zerospeech_api.cli
from zerospeech_api.cli import COMMANDS, main

# What the server and the database bring; `--help` and `version` need none of it.
HEAVY = (
    "sqlalchemy",
    "alembic",
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic_settings",
    "email_validator",
    "jinja2",
    "prometheus_client",
    "argon2",
    "httptools",
    "gunicorn",
    "uvicorn",
)
# The evaluation worker needs the database, not the web app.
WEB_ONLY = (
    "fastapi",
    "starlette",
    "email_validator",
    "jinja2",
    "prometheus_client",
    "argon2",
    "httptools",
    "gunicorn",
    "uvicorn",
)

PROBE = """
import json, sys
with open(sys.argv[1], "w") as out:
    from zerospeech_api.cli import main
    out.write(json.dumps(sorted(sys.modules)) + "\\n")
    main(sys.argv[2:], prog_name="zerospeech-api", standalone_mode=False)
    out.write(json.dumps(sorted(sys.modules)) + "\\n")
    if sys.argv[2:] == ["--help"]:  # the same help with every command imported
        main.load_all()
        print("--- all loaded ---")
        main(["--help"], prog_name="zerospeech-api", standalone_mode=False)
"""


def run_probe(tmp_path: Path, *args: str) -> tuple[str, set[str], set[str]]:
    """Run the CLI with `args` in a fresh interpreter: its output, the modules imported by
    `import zerospeech_api.cli`, and those imported once the command has run."""
    modules = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(modules), *args],
        cwd=tmp_path,
        env={**env, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    imported, after = (set(json.loads(line)) for line in modules.read_text().splitlines())
    return result.stdout, imported, after


def heavy(modules: set[str], names: tuple[str, ...] = HEAVY) -> list[str]:
    return sorted(name for name in names if name in modules)


def top_level_commands() -> dict[str, click.Command]:
    """Every command defined in the modules of zerospeech_api.cli that no group of theirs holds:
    found in the code, whatever the mapping says."""
    commands: list[click.Command] = []
    for info in pkgutil.iter_modules(zerospeech_api.cli.__path__, "zerospeech_api.cli."):
        module = importlib.import_module(info.name)
        commands += [v for v in vars(module).values() if isinstance(v, click.Command)]
    commands += main.commands.values()
    held = {
        id(sub)
        for command in commands
        if isinstance(command, click.Group) and command is not main
        for sub in command.commands.values()
    }
    return {
        str(command.name): command
        for command in commands
        if id(command) not in held and command is not main
    }


def test_help_lists_every_command_without_importing_any(tmp_path: Path) -> None:
    output, imported, after = run_probe(tmp_path, "--help")
    assert heavy(imported) == []
    assert heavy(after) == []
    assert not {m for m in after if m.startswith("zerospeech_api.cli.")}
    lazy_help, _, loaded_help = output.partition("--- all loaded ---\n")
    listed = lazy_help.split("Commands:\n")[1].splitlines()
    assert sorted(line.split()[0] for line in listed) == sorted(top_level_commands())
    # Word for word what click prints with the commands imported (same short help each).
    assert lazy_help == loaded_help


def test_version_imports_no_heavy_library(tmp_path: Path) -> None:
    output, _, after = run_probe(tmp_path, "version")
    assert output.startswith("zerospeech-api ")
    assert heavy(after) == []


def test_the_worker_imports_the_database_not_the_web_app(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"ZR_DATA_DIR={tmp_path / 'data'}\nZR_SECRET_KEY={'k' * 40}\n")
    _, _, after = run_probe(tmp_path, "worker", "--once")
    assert "sqlalchemy" in after  # it did run
    assert heavy(after, WEB_ONLY) == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_mapping_names_its_command_and_its_help(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert command is not None and command.name == name
    stand_in = click.Command(name, help=COMMANDS[name].help)
    for limit in (45, 1000):
        assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit)


def test_every_command_is_in_the_mapping() -> None:
    missing = sorted(set(top_level_commands()) - set(COMMANDS) - set(main.commands))
    assert missing == [], f"add them to COMMANDS in zerospeech_api/cli/__init__.py: {missing}"


def test_a_mistyped_command_is_told_the_closest_names(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZR_")}
    result = subprocess.run(
        [sys.executable, "-m", "zerospeech_api", "user"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "No such command 'user'" in result.stderr and "'users'" in result.stderr


def test_the_app_leaves_pages_and_tokens_to_their_first_use(tmp_path: Path) -> None:
    """`import zerospeech_api.app` (the gunicorn master, before /health can answer) loads
    neither jinja2 nor PyJWT: the first page, mail or login does."""
    code = "import json, sys, zerospeech_api.app; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout))
    assert {"zerospeech_api.pages.render", "zerospeech_api.security.tokens"} <= modules
    assert heavy(modules, ("jinja2", "jwt")) == []
