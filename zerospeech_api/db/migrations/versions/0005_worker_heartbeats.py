"""worker heartbeats (and, later in this revision, operations state)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import zerospeech_api.db.tables

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column(
            "started_at", zerospeech_api.db.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "last_seen_at", zerospeech_api.db.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("current_job_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["current_job_id"],
            ["jobs.id"],
            name=op.f("fk_workers_current_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workers_current_job_id"), ["current_job_id"])
        batch_op.create_index(batch_op.f("ix_workers_last_seen_at"), ["last_seen_at"])


def downgrade() -> None:
    op.drop_table("workers")
