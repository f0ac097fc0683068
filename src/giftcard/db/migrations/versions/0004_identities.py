"""One identity namespace: an email belongs to one customer or one staff member.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Before this revision sign-up looked only at customers, so a stranger could sign up with a
staff member's address. Where that happened, the staff member keeps the address: staff are
created by the operator, customers by anyone. Such customers keep their account and
balance but can no longer log in with that address; the migration logs their ids.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("customer_id", Id, nullable=True),
        sa.Column("staff_id", Id, nullable=True),
        sa.CheckConstraint(
            "(customer_id IS NULL) <> (staff_id IS NULL)", name=op.f("ck_identities_one_owner")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_identities_customer_id_customers")
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name=op.f("fk_identities_staff_id_staff")
        ),
        sa.PrimaryKeyConstraint("email", name=op.f("pk_identities")),
        sa.UniqueConstraint("customer_id", name=op.f("uq_identities_customer_id")),
        sa.UniqueConstraint("staff_id", name=op.f("uq_identities_staff_id")),
    )
    # Emails have always been stored lower-cased and trimmed, so they are copied as they
    # are. Staff first: where a customer shares a staff member's address, the staff
    # member keeps it.
    op.execute("INSERT INTO identities (email, staff_id) SELECT email, id FROM staff")
    connection = op.get_bind()
    shared = connection.execute(
        sa.text(
            "SELECT customers.id FROM customers JOIN identities "
            "ON identities.email = customers.email ORDER BY customers.id"
        )
    ).scalars()
    shared_ids = [f"cus_{customer_id}" for customer_id in shared]
    if shared_ids:
        log.warning(
            "%d customer account(s) had a staff member's email; the staff member keeps it "
            "and these customers can no longer log in with it: %s",
            len(shared_ids),
            ", ".join(shared_ids),
        )
    op.execute(
        "INSERT INTO identities (email, customer_id) SELECT email, id FROM customers "
        "WHERE email NOT IN (SELECT email FROM identities)"
    )


def downgrade() -> None:
    op.drop_table("identities")
