"""Add precompiled bytecode to a shiv zipapp (shiv itself skips .pyc files).

    python packaging/add_bytecode.py PYZ SITE_PACKAGES

SITE_PACKAGES is the folder the pyz was built from, compiled beforehand with
`compileall --invalidation-mode checked-hash` by the interpreter the pyz targets. Hash-based
pycs are checked against the source's hash, not its mtime, so they stay valid after shiv extracts
the files (with new mtimes) into SHIV_ROOT, and they are byte-for-byte reproducible. Without them
the first start compiles every imported module, which costs more than the extraction itself.
Entries are rewritten in order with each source's timestamp, mode and compression.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path


def add_bytecode(pyz: Path, site_packages: Path) -> int:
    """Rewrite `pyz` with each site-packages/**/X.py followed by its pyc; returns pycs added."""
    data = pyz.read_bytes()
    shebang = data[: data.index(b"\n") + 1] if data.startswith(b"#!") else b""
    tmp = pyz.with_name(pyz.name + ".bytecode")
    added = 0
    with zipfile.ZipFile(pyz) as source, open(tmp, "wb") as handle:
        handle.write(shebang)
        with zipfile.ZipFile(handle, "w") as target:
            for info in source.infolist():
                target.writestr(info, source.read(info))
                name = info.filename
                if not (name.startswith("site-packages/") and name.endswith(".py")):
                    continue
                relative = Path(name).relative_to("site-packages")
                cache = relative.parent / "__pycache__"
                tag = sys.implementation.cache_tag
                pyc = site_packages / cache / f"{relative.stem}.{tag}.pyc"
                if not pyc.is_file():
                    continue
                entry = zipfile.ZipInfo(f"site-packages/{cache}/{pyc.name}", info.date_time)
                entry.compress_type = info.compress_type
                entry.external_attr = info.external_attr
                target.writestr(entry, pyc.read_bytes())
                added += 1
    os.chmod(tmp, 0o755)
    os.replace(tmp, pyz)
    return added


if __name__ == "__main__":
    count = add_bytecode(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"add_bytecode: {count} precompiled modules")  # noqa: T201
