"""The abuse limits' reservations, shared by every worker when there is no Redis.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "limit_reservations",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("limit_key", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_limit_reservations")),
    )
    op.create_index(
        "ix_limit_reservations_limit_key_expires_at",
        "limit_reservations",
        ["limit_key", "expires_at"],
        unique=False,
    )
    op.create_index(
        "ix_limit_reservations_expires_at", "limit_reservations", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_limit_reservations_expires_at", table_name="limit_reservations")
    op.drop_index("ix_limit_reservations_limit_key_expires_at", table_name="limit_reservations")
    op.drop_table("limit_reservations")
