"""Add precompiled bytecode for the start-up modules to a shiv zipapp (shiv skips .pyc files).

    python packaging/add_bytecode.py PYZ SITE_PACKAGES

Run with the interpreter the pyz targets. Why: without bytecode the first start compiles every
module it imports (more than the extraction costs), and every start does so again where bytecode
cannot be cached (PYTHONDONTWRITEBYTECODE). But each file shiv extracts costs a file creation,
so only the modules that `serve`, `worker`, `supervise` and the CLI import at start-up get one
(about half); the rest compile on first use, cached in SHIV_ROOT when Python may write there.

The pycs are hash-based (`checked-hash`): valid after extraction gives the sources new mtimes,
checked against the source's hash, and byte-for-byte reproducible (paths inside are relative).
Entries are rewritten in order with each source's timestamp, mode and compression.
"""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
import zipfile
from pathlib import Path

# What the run modes import before serving their first request (the app package is taken
# whole). Modules imported lazily (uvicorn's protocol, anyio's backend...) are named explicitly:
# a trace of `serve` and a few requests, compared with this list, found them.
ENTRY_MODULES = (
    "zerospeech_api.cli",
    "zerospeech_api.app",
    "zerospeech_api.evaluation.worker",
    "zerospeech_api.appliance.gunicorn_app",
    "gunicorn.arbiter",
    "gunicorn.app.base",
    "uvicorn_worker",
    "uvicorn.main",
    "uvicorn.lifespan.on",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.loops.auto",
    "uvicorn.loops.asyncio",
    "supervisor.supervisord",
    "supervisor.supervisorctl",
    "psycopg",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "sqlalchemy.dialects.postgresql.psycopg",
    "alembic.command",
    "alembic.runtime.migration",
    "mako.ext.pygmentplugin",
    "gunicorn.glogging",
    "gunicorn.ctl.server",
    "uvicorn.protocols.http.auto",
    "uvicorn.supervisors.watchfilesreload",
    "anyio._backends._asyncio",
    "anyio.streams.memory",
    "anyio.streams.stapled",
    "anyio.streams.tls",
    "fastapi.telemetry._runtime",
)

TRACE = """
import importlib, importlib.util, pkgutil, sys
site = sys.argv[1]
sys.path.insert(0, site)
names = sys.argv[2:]
import zerospeech_api
names += [m.name for m in pkgutil.walk_packages(zerospeech_api.__path__, "zerospeech_api.")
          if not m.name.endswith("__main__")]
for name in names:
    try:
        importlib.import_module(name)
    except ImportError:  # an optional extra that is not installed: still compiled at start-up
        print(importlib.util.find_spec(name).origin[len(site) + 1:])
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None) or ""
    if path.startswith(site + "/") and path.endswith(".py"):
        print(path[len(site) + 1:])
"""


def startup_sources(site_packages: Path) -> set[str]:
    """Files (relative to site-packages) imported at start-up, traced in a clean interpreter."""
    result = subprocess.run(
        [sys.executable, "-S", "-c", TRACE, str(site_packages), *ENTRY_MODULES],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"},
    )
    ours = {  # the whole app, migrations included (alembic loads those by file path)
        str(p.relative_to(site_packages)) for p in (site_packages / "zerospeech_api").rglob("*.py")
    }
    return set(result.stdout.split()) | ours


def compile_source(site_packages: Path, relative: str) -> bytes:
    """The checked-hash pyc of one source, its recorded path relative (site-packages/...)."""
    source = site_packages / relative
    target = site_packages / ".bytecode" / (relative + "c")
    target.parent.mkdir(parents=True, exist_ok=True)
    py_compile.compile(
        str(source),
        cfile=str(target),
        dfile=f"site-packages/{relative}",
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
    )
    return target.read_bytes()


def add_bytecode(pyz: Path, site_packages: Path) -> int:
    """Rewrite `pyz` with each start-up module followed by its pyc; returns pycs added."""
    wanted = startup_sources(site_packages)
    data = pyz.read_bytes()
    shebang = data[: data.index(b"\n") + 1] if data.startswith(b"#!") else b""
    tmp = pyz.with_name(pyz.name + ".bytecode")
    tag = sys.implementation.cache_tag
    added = 0
    with zipfile.ZipFile(pyz) as source, open(tmp, "wb") as handle:
        handle.write(shebang)
        with zipfile.ZipFile(handle, "w") as target:
            for info in source.infolist():
                target.writestr(info, source.read(info))
                relative = info.filename.removeprefix("site-packages/")
                if relative not in wanted:
                    continue
                path = Path(relative)
                name = f"site-packages/{path.parent / '__pycache__' / f'{path.stem}.{tag}.pyc'}"
                entry = zipfile.ZipInfo(name, info.date_time)
                entry.compress_type = info.compress_type
                entry.external_attr = info.external_attr
                target.writestr(entry, compile_source(site_packages, relative))
                added += 1
    os.chmod(tmp, 0o755)
    os.replace(tmp, pyz)
    return added


if __name__ == "__main__":
    count = add_bytecode(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"add_bytecode: {count} precompiled start-up modules")  # noqa: T201
