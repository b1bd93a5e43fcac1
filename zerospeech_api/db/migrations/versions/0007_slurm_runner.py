"""evaluation on Slurm: the evaluator's runner and the Slurm job of an evaluation job

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing evaluators keep running as subprocesses of the worker: `local`.
    with op.batch_alter_table("evaluators", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("runner", sa.String(length=16), server_default="local", nullable=False)
        )
        batch_op.add_column(sa.Column("sbatch_args", sa.Text(), server_default="", nullable=False))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slurm_job_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("slurm_claim", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("slurm_active", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index(batch_op.f("ix_jobs_slurm_active"), ["slurm_active"])


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_slurm_active"))
        batch_op.drop_column("slurm_active")
        batch_op.drop_column("slurm_claim")
        batch_op.drop_column("slurm_job_id")
    with op.batch_alter_table("evaluators", schema=None) as batch_op:
        batch_op.drop_column("sbatch_args")
        batch_op.drop_column("runner")
