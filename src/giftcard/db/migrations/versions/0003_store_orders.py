"""The demo store's orders, each paid by one payment.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "store_orders",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", Id, nullable=False),
        sa.Column("payment_id", Id, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("items", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_store_orders_amount_positive")),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_store_orders_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_store_orders_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store_orders")),
        sa.UniqueConstraint("order_id", name=op.f("uq_store_orders_order_id")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_store_orders_payment_id")),
    )
    op.create_index(
        "ix_store_orders_customer_id_id", "store_orders", ["customer_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_store_orders_customer_id_id", table_name="store_orders")
    op.drop_table("store_orders")
