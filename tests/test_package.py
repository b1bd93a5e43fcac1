"""The package itself: what importing it does to the process, and how its parts depend on each
other (one way only)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

PLUGIN = "marker_plugin"
LOADS_SETTINGS = """
from zerospeech_api.settings import load_settings
load_settings(None)
"""


def test_pydantic_plugins_installed_on_the_host_are_never_loaded(tmp_path: Path) -> None:
    # A real distribution declaring a pydantic plugin, found through PYTHONPATH as any package
    # installed on the host would be; importing its module would leave a file behind.
    marker = tmp_path / "loaded"
    (tmp_path / f"{PLUGIN}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "class Plugin:\n"
        "    def new_schema_validator(self, *args, **kwargs):\n"
        "        return None, None, None\n"
        "plugin = Plugin()\n"
    )
    info = tmp_path / f"{PLUGIN}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PLUGIN}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[pydantic]\nmarker = {PLUGIN}:plugin\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZR_", "PYDANTIC_"))}
    env["PYTHONPATH"] = str(tmp_path)
    env["ZR_DATA_DIR"] = str(tmp_path / "data")

    # Without the package, pydantic loads it: the check below can fail.
    check = "import pydantic\nclass M(pydantic.BaseModel):\n    x: int = 0\n"
    subprocess.run([sys.executable, "-c", check], env=env, check=True, cwd=tmp_path)
    assert marker.exists()
    marker.unlink()

    subprocess.run([sys.executable, "-c", LOADS_SETTINGS], env=env, check=True, cwd=tmp_path)
    assert not marker.exists()


# --- one-way order of the packages --------------------------------------------------------

PACKAGE = "zerospeech_api"
SOURCE = Path(__file__).resolve().parents[1] / PACKAGE
ROOT = "__init__"  # `from zerospeech_api import __version__`: the package's own __init__
# Lowest first. A module may import its own package and anything in a lower layer, never a
# higher layer nor another package of its own layer; every top-level module has a place here.
LAYERS: list[set[str]] = [
    {ROOT, "settings", "errors", "logs", "files"},
    {"db", "mail"},
    {"security", "cluster", "alerts", "checks"},
    {"deps", "middleware"},
    {"accounts", "docs"},
    {"builtin_rows"},
    {"benchmarks"},
    {"models"},
    {"submissions"},
    {"leaderboards"},
    {"evaluation"},
    {"metrics", "pages", "demo"},
    {"app"},
    {"appliance"},
    {"cli"},
    {"__main__"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level(module: str) -> str:
    """The top-level package or module of `zerospeech_api.x.y` (`x`), or ROOT."""
    parts = module.split(".")
    if len(parts) < 2:
        return ROOT
    first = parts[1]
    return first if (SOURCE / first).is_dir() or (SOURCE / f"{first}.py").is_file() else ROOT


def imported_modules(path: Path, name: str) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in `path` (module `name`), at any depth (inside functions
    too), except under `if TYPE_CHECKING:` (never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(sub) for branch in node.body for sub in ast.walk(branch)}
    here = name.split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base == PACKAGE:  # `from zerospeech_api import x`: x is a module or a name
                for alias in node.names:
                    yield node.lineno, f"{PACKAGE}.{alias.name}"
            else:
                yield node.lineno, base


def order_violations() -> list[str]:
    layer_of = {name: index for index, layer in enumerate(LAYERS) for name in layer}
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        source = top_level(module_name(path))
        if source not in layer_of:
            found.append(f"{path.relative_to(SOURCE.parent)}: {source} has no place in LAYERS")
            continue
        for line, module in imported_modules(path, module_name(path)):
            if module != PACKAGE and not module.startswith(f"{PACKAGE}."):
                continue
            target = top_level(module)
            if target == source:
                continue
            if layer_of.get(target, len(LAYERS)) >= layer_of[source]:
                found.append(f"{path.relative_to(SOURCE.parent)}:{line}: {source} -> {module}")
    return found


def test_packages_import_each_other_one_way_only() -> None:
    assert SOURCE.is_dir()
    assert len(list(SOURCE.rglob("*.py"))) > 100  # the walk sees the whole package
    assert order_violations() == []


def test_the_order_check_sees_imports_at_any_depth(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "from zerospeech_api.db import tables\n"
        "if TYPE_CHECKING:\n"
        "    from zerospeech_api.app import create_app\n"
        "def later():\n"
        "    import zerospeech_api.cli.run\n"
        "    from zerospeech_api import app, __version__\n"
    )
    found = [name for _, name in imported_modules(module, f"{PACKAGE}.probe")]
    assert "zerospeech_api.db" in found and "zerospeech_api.cli.run" in found
    assert "zerospeech_api.app" in found and "zerospeech_api.__version__" in found
    assert found.count("zerospeech_api.app") == 1  # the TYPE_CHECKING one is not counted
    assert [top_level(name) for name in found if name.startswith(PACKAGE)] == [
        "db",
        "cli",
        "app",
        ROOT,
    ]
