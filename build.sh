#!/usr/bin/env bash
# Build dist/zerospeech-api.pyz: the app and every runtime dependency in one shiv zipapp.
#
#   ./build.sh                      wheels from the package index (pinned and hashed by the lock)
#   ./build.sh --wheelhouse DIR     no index access at all (DIR from packaging/wheelhouse.sh)
#   ./build.sh --output FILE        somewhere else than dist/zerospeech-api.pyz
#   PYTHON=python3.11 ./build.sh    the interpreter the pyz targets (its minor version and platform
#                                   are baked into the binary wheels; default python3)
#
# Reproducible: the same sources, lock, Python and SOURCE_DATE_EPOCH give the same bytes
# (shiv --reproducible; hash-based bytecode, normalised file modes, no paths of this machine).
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD

wheelhouse=""
output="dist/zerospeech-api.pyz"
while [ $# -gt 0 ]; do
    case "$1" in
        --wheelhouse) wheelhouse=$(cd "$2" && pwd); shift 2 ;;
        --output) output=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

python=${PYTHON:-python3}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}  # 1980-01-01, the zip epoch
export PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

pip_source=()
if [ -n "$wheelhouse" ]; then
    pip_source=(--no-index --find-links "$wheelhouse")
fi

echo "build.sh: tools (shiv, setuptools) into a private venv"
"$python" -m venv "$tmp/tools"
tools_pip=("$tmp/tools/bin/python" -m pip -q)
"${tools_pip[@]}" install --no-deps --require-hashes --only-binary=:all: "${pip_source[@]}" \
    -r packaging/build-requirements.lock

echo "build.sh: the project's wheel from a clean copy of the sources"
mkdir -p "$tmp/src"
tar -C "$root" --exclude='__pycache__' --exclude='*.pyc' -cf - pyproject.toml README.md \
    zerospeech_api | tar -C "$tmp/src" -xf -
"${tools_pip[@]}" wheel --no-deps --no-build-isolation "${pip_source[@]}" -w "$tmp/wheels" \
    "$tmp/src" >/dev/null

echo "build.sh: runtime dependencies from packaging/requirements.lock"
site="$tmp/site-packages"
"${tools_pip[@]}" install --target "$site" --no-compile --require-hashes --only-binary=:all: \
    "${pip_source[@]}" -r packaging/requirements.lock
rm -rf "$site/bin"  # console scripts of the dependencies (unused, and they name this venv)
# By name from the local wheel folder (not by path), so pip records no direct_url.json.
"${tools_pip[@]}" install --target "$site" --no-compile --no-deps --no-index \
    --find-links "$tmp/wheels" zerospeech-api

# Nothing machine- or run-specific inside: console scripts carry this venv's path in their
# shebang, pip's bytecode would carry them too (ours is added below), modes follow the umask.
rm -rf "$site/bin"
# Test suites shipped inside some packages: never imported, and each file costs an extraction.
rm -rf "$site/supervisor/tests" "$site/sqlalchemy/testing" "$site/alembic/testing" \
    "$site/mako/testing"
# Cython sources and typing stubs: never read at run time, and each is one more zip entry to
# index on every start (zipimport, importlib.metadata and shiv each read the whole directory).
find "$site" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.pyi' \) -delete
sed -i -E '/^(\.\.\/)*bin\//d' "$site"/*.dist-info/RECORD
find "$site" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$site" -name '*.pyc' -delete
find "$site" -type d -exec chmod 0755 {} +
find "$site" -type f -exec chmod 0644 {} +

# Every requirement of the project (and its postgres extra) must be in the lock.
"$tmp/tools/bin/python" - "$site" <<'PY'
import re, sys
from importlib.metadata import distribution, distributions
site = sys.argv[1]
have = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in distributions(path=[site])}
app = next(d for d in distributions(path=[site]) if d.metadata["Name"] == "zerospeech-api")
missing = []
for req in app.requires or []:
    name, _, marker = req.partition(";")
    if marker and "postgres" not in marker:
        continue  # other extras (test) are not shipped
    name = re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~(]", name.strip())[0]).lower()
    if name not in have:
        missing.append(name)
if missing:
    sys.exit("build.sh: not in packaging/requirements.lock (run packaging/lock.sh): " + ", ".join(missing))
PY

echo "build.sh: shiv"
mkdir -p "$(dirname "$output")"
"$tmp/tools/bin/python" -m shiv --reproducible --compressed --site-packages "$site" \
    -p '/usr/bin/env python3' -e zerospeech_api.cli:main -o "$tmp/zerospeech-api.pyz"
# Pure-Python packages imported from the zip (never extracted), bytecode for them and for the
# extracted start-up modules: the first start extracts a third of the files and compiles nothing.
"$tmp/tools/bin/python" packaging/finish_pyz.py "$tmp/zerospeech-api.pyz" "$site"
# Atomic replace: a running pyz keeps its (unlinked) file.
mv -f "$tmp/zerospeech-api.pyz" "$output.tmp.$$" && mv -f "$output.tmp.$$" "$output"
echo "built $output ($(du -h "$output" | cut -f1), sha256 $(sha256sum "$output" | cut -c1-16))"
