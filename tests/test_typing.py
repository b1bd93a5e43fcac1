"""The type checker's configuration stays strict; mypy itself runs in .ci/run, not here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "zerospeech_api"
# A `# type: ignore` names its error code and says why, after it, in a comment.
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<code>\[[a-z-]+(?:,\s*[a-z-]+)*\])?(?P<rest>.*)$")


def _mypy_config() -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mypy = config["tool"]["mypy"]
    assert isinstance(mypy, dict)
    return mypy


def test_mypy_is_strict_on_the_whole_package() -> None:
    mypy = _mypy_config()
    assert mypy["strict"] is True
    assert mypy["packages"] == [PACKAGE]


def test_no_override_relaxes_the_package_own_modules() -> None:
    overrides = _mypy_config().get("overrides", [])
    assert isinstance(overrides, list)
    for override in overrides:
        modules = override["module"]
        for module in [modules] if isinstance(modules, str) else modules:
            assert not module.startswith(PACKAGE), f"override for our own module {module}"


def test_ci_runs_mypy_before_the_tests() -> None:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ".venv/bin/mypy" in lines
    pytest = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert lines.index(".venv/bin/mypy") < pytest


def test_every_type_ignore_names_its_code_and_reason() -> None:
    bare = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found = IGNORE.search(line)
            if found and not (found["code"] and found["rest"].strip().lstrip("#").strip()):
                bare.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bare, "a `# type: ignore[code]` needs a reason after it:\n" + "\n".join(bare)
