"""normalised, case-insensitive unique e-mails and usernames

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 09:00:00

Adds `users.username_key` and `users.email_key` (`name_key()` of the names: NFKC, case-folded)
with unique indexes, filled from the existing rows. Written without a batch table copy: on SQLite
re-creating `users` would drop it, and with foreign keys on that deletes every session, token,
model and submission by cascade. Accounts that already share a key (made before this check
existed) are all kept: the oldest keeps the plain key, the others get `<key> #<id>` (no real name
has that form) and are named in a warning, for the operator to sort out.
"""

from collections.abc import Sequence
from logging import getLogger

import sqlalchemy as sa
from alembic import op

from zerospeech_api.db.keys import name_key

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS = (("username", 64), ("email", 320))
log = getLogger("alembic.runtime.migration")


def upgrade() -> None:
    for name, length in KEYS:
        # NOT NULL needs a default to be added to existing rows on SQLite; filled just below.
        op.add_column(
            "users",
            sa.Column(f"{name}_key", sa.String(length), nullable=False, server_default=""),
        )
    users = sa.table(
        "users",
        sa.column("id", sa.Integer),
        *(sa.column(f"{name}_key", sa.String) for name, _ in KEYS),
        *(sa.column(name, sa.String) for name, _ in KEYS),
    )
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(users.c.id, users.c.username, users.c.email).order_by(users.c.id)
    ).all()
    seen: dict[str, set[str]] = {name: set() for name, _ in KEYS}
    for row in rows:
        values = {}
        for name, _ in KEYS:
            key = name_key(getattr(row, name))
            if key in seen[name]:
                log.warning(
                    "users: %s of user id %s differs only in case from an older one", name, row.id
                )
                key = f"{key} #{row.id}"
            seen[name].add(key)
            values[f"{name}_key"] = key
        connection.execute(sa.update(users).where(users.c.id == row.id).values(**values))
    for name, _ in KEYS:
        op.create_index(op.f(f"ix_users_{name}_key"), "users", [f"{name}_key"], unique=True)
        if connection.dialect.name != "sqlite":  # SQLite cannot drop a default in place
            op.alter_column("users", f"{name}_key", server_default=None)


def downgrade() -> None:
    for name, _ in KEYS:
        op.drop_index(op.f(f"ix_users_{name}_key"), table_name="users")
        op.drop_column("users", f"{name}_key")
