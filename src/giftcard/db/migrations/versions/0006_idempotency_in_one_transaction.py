"""Idempotency keys are claimed and answered in the use case's own transaction.

A key's row is never seen in progress any more, so the columns that tracked a claim's
state and its lock go. Rows still in progress (their requests died) are deleted: nothing
of theirs committed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM idempotency_keys WHERE state <> 'complete'")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_idempotency_keys_state_known"), type_="check")
        batch_op.drop_column("state")
        batch_op.drop_column("locked_at")


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("state", sa.String(length=16), nullable=False, server_default="complete")
        )
        batch_op.add_column(
            sa.Column(
                "locked_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.text("CURRENT_TIMESTAMP"),
            )
        )
        batch_op.create_check_constraint(
            op.f("ck_idempotency_keys_state_known"), "state IN ('in_progress', 'complete')"
        )
