#!/usr/bin/env bash
# Prepare a wheelhouse for offline builds, on a connected machine with the target Python:
#   packaging/wheelhouse.sh [DIR]        (default: ./wheelhouse)
# then copy DIR to the build host and run:  ./build.sh --wheelhouse DIR
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-wheelhouse}
python=${PYTHON:-python3}
mkdir -p "$dir"
"$python" -m pip download --only-binary=:all: --require-hashes -r packaging/requirements.lock -d "$dir"
"$python" -m pip download --only-binary=:all: --require-hashes -r packaging/build-requirements.lock -d "$dir"
echo "wheelhouse ready in $dir ($(ls "$dir" | wc -l) files)"
