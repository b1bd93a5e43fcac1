"""The documentation covers the product: every setting in etc/example.env (with its real default)
and the README, every command of the CLI in the README."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from pydantic import SecretStr

from zerospeech_api.cli import main
from zerospeech_api.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ENV = (ROOT / "etc" / "example.env").read_text()
README = (ROOT / "README.md").read_text()
FIELDS = list(Settings.model_fields)


def variable(name: str) -> str:
    return f"{ENV_PREFIX}{name.upper()}"


def default_text(name: str) -> str:
    value = Settings.model_fields[name].default
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@pytest.mark.parametrize("name", FIELDS)
def test_every_setting_is_in_example_env_with_its_default(name: str) -> None:
    match = re.search(rf"^#? ?{variable(name)}=(.*)$", EXAMPLE_ENV, re.MULTILINE)
    assert match, f"{variable(name)} is missing from etc/example.env"
    assert match.group(1).strip().strip('"') == default_text(name)
    # Its description is the comment above it (first line at least).
    description = Settings.model_fields[name].description or ""
    assert description.split(";")[0].split(". ")[0].rstrip(".") in EXAMPLE_ENV


def test_example_env_names_no_unknown_setting() -> None:
    known = {variable(name) for name in FIELDS}
    named = set(re.findall(rf"^#? ?({ENV_PREFIX}[A-Z0-9_]+)=", EXAMPLE_ENV, re.MULTILINE))
    assert named <= known, named - known


@pytest.mark.parametrize("name", FIELDS)
def test_every_setting_is_in_the_readme(name: str) -> None:
    assert f"`{variable(name)}`" in README, f"README lacks {variable(name)}"


@pytest.mark.parametrize("command", main.list_commands(click.Context(main)))
def test_every_command_is_in_the_readme(command: str) -> None:
    pattern = rf"(zerospeech-api|\.pyz)( --env-file \S+)? {re.escape(command)}\b|`{command}\b"
    assert re.search(pattern, README), f"README does not show the `{command}` command"
