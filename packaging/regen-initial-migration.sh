#!/usr/bin/env bash
# Until the first release, the schema is one initial migration generated from db/tables.py.
# After a release, add a new revision instead: alembic revision --autogenerate -m "..."
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/alembic.ini" <<INI
[alembic]
script_location = $PWD/zerospeech_api/db/migrations
sqlalchemy.url = sqlite:///$tmp/empty.db
INI
rm -f zerospeech_api/db/migrations/versions/0001_initial.py
alembic -c "$tmp/alembic.ini" revision --autogenerate --rev-id 0001 -m "initial schema" >/dev/null
mv zerospeech_api/db/migrations/versions/0001_initial_schema.py zerospeech_api/db/migrations/versions/0001_initial.py
ruff format -q zerospeech_api/db/migrations/versions/0001_initial.py
ruff check -q --fix zerospeech_api/db/migrations/versions/0001_initial.py || true
echo "regenerated zerospeech_api/db/migrations/versions/0001_initial.py"
