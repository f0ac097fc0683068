"""Payments at checkout and their refunds; the store-credit system accounts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CURRENCIES = ("USD", "GBP", "EUR", "JPY", "CAD", "AUD", "INR")
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("customer_id", Id, nullable=False),
        sa.Column("order_id", sa.String(length=255), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("gift_card_amount", sa.BigInteger(), nullable=False),
        sa.Column("other_amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("captured_amount", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "captured_gift_card_amount",
            sa.BigInteger(),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("refunded_amount", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "refunded_gift_card_amount",
            sa.BigInteger(),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("hold_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payments_amount_positive")),
        sa.CheckConstraint(
            "gift_card_amount >= 0 AND other_amount >= 0 AND gift_card_amount + other_amount = amount",
            name=op.f("ck_payments_split_adds_up"),
        ),
        sa.CheckConstraint(
            "captured_amount >= 0 AND captured_amount <= amount "
            "AND captured_gift_card_amount >= 0 AND captured_gift_card_amount <= gift_card_amount "
            "AND captured_gift_card_amount <= captured_amount",
            name=op.f("ck_payments_captured_within_amount"),
        ),
        sa.CheckConstraint(
            "refunded_amount >= 0 AND refunded_amount <= captured_amount "
            "AND refunded_gift_card_amount >= 0 "
            "AND refunded_gift_card_amount <= captured_gift_card_amount "
            "AND refunded_gift_card_amount <= refunded_amount",
            name=op.f("ck_payments_refunded_within_captured"),
        ),
        sa.CheckConstraint(
            "status IN ('authorized', 'captured', 'voided', 'expired', 'refunded')",
            name=op.f("ck_payments_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_payments_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
    )
    op.create_index(
        "uq_payments_live_order",
        "payments",
        ["customer_id", "order_id"],
        unique=True,
        sqlite_where=sa.text("status IN ('authorized', 'captured')"),
        postgresql_where=sa.text("status IN ('authorized', 'captured')"),
    )
    op.create_index(
        "ix_payments_hold_expires_at",
        "payments",
        ["hold_expires_at"],
        sqlite_where=sa.text("status = 'authorized'"),
        postgresql_where=sa.text("status = 'authorized'"),
    )
    with op.batch_alter_table("journal_transactions") as batch:
        batch.add_column(sa.Column("payment_id", Id, nullable=True))
        batch.create_foreign_key(
            op.f("fk_journal_transactions_payment_id_payments"),
            "payments",
            ["payment_id"],
            ["id"],
        )
    op.create_table(
        "refunds",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("payment_id", Id, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("gift_card_amount", sa.BigInteger(), nullable=False),
        sa.Column("to_gift_card_balance", sa.BigInteger(), nullable=False),
        sa.Column("to_original_payment_method", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", Id, nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_refunds_amount_positive")),
        sa.CheckConstraint(
            "to_gift_card_balance >= 0 AND to_original_payment_method >= 0 "
            "AND to_gift_card_balance + to_original_payment_method = amount",
            name=op.f("ck_refunds_split_adds_up"),
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_refunds_payment_id_payments")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["journal_transactions.id"],
            name=op.f("fk_refunds_transaction_id_journal_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
    )
    op.create_index("ix_refunds_payment_id", "refunds", ["payment_id"])
    ledger_accounts = sa.table(
        "ledger_accounts",
        sa.column("kind", sa.String),
        sa.column("currency", sa.String),
        sa.column("tracked", sa.Boolean),
        sa.column("balance", sa.BigInteger),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(
        ledger_accounts,
        [
            {
                "kind": "store_credit",
                "currency": currency,
                "tracked": False,
                "balance": 0,
                "created_at": datetime.now(UTC),
            }
            for currency in CURRENCIES
        ],
    )


def downgrade() -> None:
    op.execute("DELETE FROM ledger_accounts WHERE kind = 'store_credit' AND NOT tracked")
    op.drop_index("ix_refunds_payment_id", table_name="refunds")
    op.drop_table("refunds")
    with op.batch_alter_table("journal_transactions") as batch:
        batch.drop_constraint(
            op.f("fk_journal_transactions_payment_id_payments"), type_="foreignkey"
        )
        batch.drop_column("payment_id")
    op.drop_index("ix_payments_hold_expires_at", table_name="payments")
    op.drop_index("uq_payments_live_order", table_name="payments")
    op.drop_table("payments")
