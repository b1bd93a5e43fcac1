"""alert state and the watchdog's election row

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 11:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import zerospeech_api.db.tables

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column(
            "first_seen_at", zerospeech_api.db.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "last_seen_at", zerospeech_api.db.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "resolved_at", zerospeech_api.db.tables.UTCDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alerts_resolved_at"), ["resolved_at"])
    op.create_table(
        "watchdog_turns",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("ran_at", zerospeech_api.db.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ran_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_watchdog_turns")),
    )


def downgrade() -> None:
    op.drop_table("watchdog_turns")
    op.drop_table("alerts")
