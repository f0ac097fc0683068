"""The demo store's orders get short readable numbers (`GC-7K4Q-2M`) for shoppers.

Orders placed before this revision are numbered here, each with a fresh random number,
so that every order has one and the column can be required and unique.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Crockford's base32, as giftcard.demo.store writes order numbers. Copied rather than
# imported: a migration must keep doing what it did when it was written.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _new_number(taken: set[str]) -> str:
    while True:
        digits = "".join(secrets.choice(ALPHABET) for _ in range(6))
        number = f"GC-{digits[:4]}-{digits[4:]}"
        if number not in taken:
            taken.add(number)
            return number


def upgrade() -> None:
    op.add_column("store_orders", sa.Column("number", sa.String(length=16), nullable=True))
    connection = op.get_bind()
    orders = sa.table("store_orders", sa.column("id", sa.Integer), sa.column("number"))
    taken: set[str] = set()
    for (order_id,) in connection.execute(sa.select(orders.c.id)).all():
        connection.execute(
            sa.update(orders).where(orders.c.id == order_id).values(number=_new_number(taken))
        )
    with op.batch_alter_table("store_orders") as batch:
        batch.alter_column("number", existing_type=sa.String(length=16), nullable=False)
        batch.create_unique_constraint(op.f("uq_store_orders_number"), ["number"])


def downgrade() -> None:
    with op.batch_alter_table("store_orders") as batch:
        batch.drop_constraint(op.f("uq_store_orders_number"), type_="unique")
        batch.drop_column("number")
