"""Finish a shiv zipapp for fast starts: fewer files to extract, and bytecode for everything.

    python packaging/finish_pyz.py PYZ SITE_PACKAGES

Run with the interpreter the pyz targets. shiv extracts all of site-packages/ into SHIV_ROOT on
the first run, and every extracted file costs a file creation (close to a millisecond on some
virtual disks: bench/bench_appliance.py measures the first run). So the archive is laid out in
two parts:

1. In the zip itself: every Python file of every top-level package or module (unless it reads
   its own data files by path: ON_DISK) and all the .dist-info metadata. The archive is the
   first entry of sys.path when Python runs it, so these are imported straight from the zip
   (zipimport) and never extracted; importlib.metadata reads the metadata from the zip too.
   This app's own code is zipped as well: only its data folders are extracted (DATA_ON_DISK).
   Each module has its bytecode beside it (`x.pyc` next to `x.py`, the layout zipimport reads),
   `unchecked-hash` because nothing can change inside the zip, and every folder has its own
   entry (zipimport needs them for namespace packages such as opentelemetry). The bytecode of
   the modules imported at start-up is stored uncompressed: every start reads it, and
   inflating it took a twentieth of the start (the zip grows by a few MB).
2. Extracted (site-packages/): what must be real files: extension modules (the compiled parts
   of sqlalchemy, pydantic_core, psycopg_binary, httptools, ...: their packages' Python files
   stay in the zip, and packaging/pyz_imports.py, installed by a .pth, loads the compiled
   submodules from here), the shared libraries they link (*.libs/), the packages that open
   their own files (ON_DISK) and the data folders of some zipped ones (DATA_ON_DISK, alembic's
   migration scripts among them). Start-up modules on disk get a `checked-hash` pyc in
   __pycache__ (extraction gives the sources new mtimes; the source hash keeps the pyc valid),
   the rest compile on first use, cached in SHIV_ROOT when Python may write there.
3. shiv's bootstrap, with bytecode, and a `__main__.py` that lets it read the zip through the
   zipimporter that imported it (packaging/pyz_boot.py): every start, warm or first, would
   otherwise compile the bootstrap and read the zip's directory once more.

Reproducible: entries keep their order, timestamps, modes and compression, and no path of this
machine ends up inside (code objects name their file relative to the archive).
"""

from __future__ import annotations

import hashlib
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

SITE = "site-packages/"
FINDER = "_zerospeech_imports.py"  # packaging/pyz_imports.py inside the pyz
PTH = "_zerospeech_imports.pth"
METADATA_INDEX = "_zerospeech_imports.json"  # read by pyz_imports.ZipDistributions
EXTRACTED_INDEX = "_zerospeech_extracted.json"  # read by pyz_boot: what the first run extracts
BOOT = "_zerospeech_boot.py"  # packaging/pyz_boot.py inside the pyz
# shiv's __main__.py runs `_bootstrap.bootstrap()`; ours first lets the bootstrap read the zip
# through zipimport (packaging/pyz_boot.py), which spares a read of the whole zip directory.
HELPERS = {FINDER: "pyz_imports.py", BOOT: "pyz_boot.py"}  # name in the zip: source here
SHIV_MAIN = b"import _bootstrap\n_bootstrap.bootstrap()\n"
MAIN = b"""# -*- coding: utf-8 -*-
import _bootstrap
import _zerospeech_boot
_zerospeech_boot.install(_bootstrap)
_bootstrap.bootstrap()
"""

# Pure-Python packages that still need to be real files, and why.
ON_DISK = {
    "supervisor": "reads version.txt and serves its web UI files by path",
}
# Packages imported from the zip whose data folders are extracted, and why: the code finds
# those folders with zerospeech_api.files.package_path (in the extraction's site-packages).
DATA_ON_DISK = {
    "zerospeech_api": {
        "templates/": "jinja2 loads the pages and mails by path",
        "static/": "served by Starlette's StaticFiles, which needs a folder",
        "db/migrations/": "alembic runs the migration scripts by path",
    },
    "fastapi_offline": {"static/": "the Swagger UI and ReDoc assets, served as files"},
}
# Packages that also read files of their own, but never at run time here: zipped anyway.
# tests/appliance/test_pyz_layout.py finds every package of the runtime set that reads its own
# files and fails unless it is in ON_DISK or here.
ZIPPED_DATA = {
    "alembic": "only its `init` command reads its templates; our migrations are in zerospeech_api",
    "cffi": "reads its C headers only to compile an extension, never in ABI mode at run time",
    "pycparser": "reads _c_ast.cfg only to regenerate its c_ast.py",
}

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
    "uvicorn.protocols.http.httptools_impl",
    "httptools",
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


def compile_pyc(site_packages: Path, relative: str, *, zipped: bool) -> bytes:
    """The hash-based pyc of one source: unchecked for a module imported from the zip (nothing
    can change there; its code names `fastapi/x.py`), checked for an extracted one (its code
    names `site-packages/...`; extraction gives sources new mtimes, the hash keeps it valid)."""
    target = site_packages / ".bytecode" / (relative + "c")
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = py_compile.PycInvalidationMode
    py_compile.compile(
        str(site_packages / relative),
        cfile=str(target),
        dfile=relative if zipped else SITE + relative,
        doraise=True,
        invalidation_mode=mode.UNCHECKED_HASH if zipped else mode.CHECKED_HASH,
    )
    return target.read_bytes()


def compile_member(site_packages: Path, name: str, body: bytes) -> bytes:
    """The unchecked-hash pyc of a file of the zip's root part (shiv's bootstrap, our helpers):
    compiled here once rather than by zipimport on every start."""
    (site_packages / name).parent.mkdir(parents=True, exist_ok=True)
    (site_packages / name).write_bytes(body)
    return compile_pyc(site_packages, name, zipped=True)


def is_extension(name: str) -> bool:
    return name.endswith((".so", ".pyd")) or ".so." in name


def zipped_tops(names: list[str]) -> set[str]:
    """The top-level entries of site-packages whose Python files can be imported from the zip:
    packages and modules (not a lone .so or .pth), unless they read their own files by path."""
    files: dict[str, list[str]] = {}
    for name in names:
        if name.startswith(SITE):
            relative = name.removeprefix(SITE)
            files.setdefault(relative.split("/")[0], []).append(relative)
    zipped = set()
    for top, members in files.items():
        if top in ON_DISK or top.endswith(".libs"):
            continue  # .libs: shared libraries the extension modules load by relative path
        if top.endswith((".dist-info", ".py")) or "/" in members[0]:
            zipped.add(top)
    return zipped


def stays_on_disk(relative: str, tops: set[str]) -> bool:
    """True for a file of site-packages that must be extracted: everything of a package that is
    not zipped, and of those that are, the extension modules (packaging/pyz_imports.py) and the
    data folders (DATA_ON_DISK)."""
    top, _, inside = relative.partition("/")
    data = DATA_ON_DISK.get(top, {})
    return top not in tops or is_extension(relative) or inside.startswith(tuple(data))


def layout_build_id(environment: bytes) -> bytes:
    """shiv's environment.json with a build id that covers this layout too.

    shiv names the extraction folder after the build id, a hash of site-packages only: a pyz
    finished differently from the same packages would reuse an extraction of the old layout.
    """
    env = json.loads(environment)
    layout = hashlib.sha256(env["build_id"].encode())
    for helper in (Path(__file__), *(Path(__file__).with_name(n) for n in HELPERS.values())):
        layout.update(helper.read_bytes())
    env["build_id"] = layout.hexdigest()
    return json.dumps(env).encode()


def metadata_index(tops: set[str]) -> bytes:
    """JSON {normalised distribution name: its .dist-info folder} of the zipped metadata."""
    index = {}
    for folder in sorted(top for top in tops if top.endswith(".dist-info")):
        name = folder.removesuffix(".dist-info").rsplit("-", 1)[0]
        index[re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")] = folder
    return json.dumps(index, indent=0, sort_keys=True).encode()


def finish(pyz: Path, site_packages: Path) -> tuple[int, int]:
    """Rewrite `pyz` in the two-part layout; returns (files left to extract, files zipped)."""
    wanted = startup_sources(site_packages)
    data = pyz.read_bytes()
    shebang = data[: data.index(b"\n") + 1] if data.startswith(b"#!") else b""
    tmp = pyz.with_name(pyz.name + ".finish")
    tag = sys.implementation.cache_tag
    extracted = zipped = 0
    with zipfile.ZipFile(pyz) as source, open(tmp, "wb") as handle:
        tops = zipped_tops(source.namelist())
        folders: set[str] = set()
        handle.write(shebang)
        with zipfile.ZipFile(handle, "w") as target:

            def add(name: str, body: bytes, like: zipfile.ZipInfo, *, stored: bool = False) -> None:
                entry = zipfile.ZipInfo(name, like.date_time)
                entry.compress_type = zipfile.ZIP_STORED if stored else like.compress_type
                entry.external_attr = like.external_attr
                target.writestr(entry, body)

            for info in source.infolist():
                body = source.read(info)
                relative = info.filename.removeprefix(SITE)
                if info.filename.startswith(SITE) and not stays_on_disk(relative, tops):
                    for parent in reversed(PurePosixPath(relative).parents[:-1]):
                        if str(parent) not in folders:
                            folders.add(str(parent))
                            folder = zipfile.ZipInfo(f"{parent}/", info.date_time)
                            folder.external_attr = 0o40755 << 16 | 0x10
                            target.writestr(folder, b"")
                    add(relative, body, info)
                    zipped += 1
                    if relative.endswith(".py"):
                        pyc = compile_pyc(site_packages, relative, zipped=True)
                        add(relative + "c", pyc, info, stored=relative in wanted)
                    continue
                if info.filename == "__main__.py" or info.filename.startswith("_bootstrap/"):
                    if info.filename == "__main__.py":
                        if not body.endswith(SHIV_MAIN):
                            raise SystemExit(f"finish_pyz: unknown shiv __main__.py: {body!r}")
                        body = MAIN
                    target.writestr(info, body)
                    if info.filename.endswith(".py"):
                        add(
                            info.filename + "c",
                            compile_member(site_packages, info.filename, body),
                            info,
                        )
                    continue
                if info.filename == "environment.json":
                    body = layout_build_id(body)
                target.writestr(info, body)
                if info.filename.startswith(SITE):
                    extracted += 1
                if relative in wanted:
                    path = PurePosixPath(relative)
                    pyc = f"{SITE}{path.parent / '__pycache__' / f'{path.stem}.{tag}.pyc'}"
                    add(pyc, compile_pyc(site_packages, relative, zipped=False), info)
                    extracted += 1
            # The import helpers (extension modules, single reads), at the root of the zip, and
            # the .pth by which shiv's bootstrap (site.addsitedir) installs them in every process.
            # Readable by every user (0644): `supervise` may switch to an unprivileged user, and
            # Python silently skips a .pth it cannot read. shiv writes __main__.py as 0600.
            main = source.getinfo("__main__.py")
            like = zipfile.ZipInfo("__main__.py", main.date_time)
            like.compress_type = main.compress_type
            like.external_attr = 0o100644 << 16
            shutil.copyfile(Path(__file__).with_name("pyz_imports.py"), site_packages / FINDER)
            add(FINDER, (site_packages / FINDER).read_bytes(), like)
            add(FINDER + "c", compile_pyc(site_packages, FINDER, zipped=True), like)
            add(f"{SITE}{PTH}", f"import {FINDER.removesuffix('.py')}\n".encode(), like)
            add(METADATA_INDEX, metadata_index(tops), like)
            to_extract = sorted(n for n in target.namelist() if n.startswith(SITE))
            add(EXTRACTED_INDEX, json.dumps(to_extract, indent=0).encode(), like)
            boot = Path(__file__).with_name(HELPERS[BOOT]).read_bytes()
            add(BOOT, boot, like)
            add(BOOT + "c", compile_member(site_packages, BOOT, boot), like)
            extracted += 1
    os.chmod(tmp, 0o755)
    os.replace(tmp, pyz)
    return extracted, zipped


if __name__ == "__main__":
    left, moved = finish(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"finish_pyz: {moved} files imported from the zip, {left} extracted")  # noqa: T201
