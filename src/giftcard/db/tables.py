"""The schema. Alembic migrations create it; this module describes it for queries.

Conventions: integer primary keys (shown enciphered behind a prefix, `cus_7qnwnh0ssvgr2`:
see ids.py), money as BIGINT minor units beside an ISO currency, timestamps in UTC. The
database backs the code up with CHECK constraints and unique keys: they are the last line
of defence, not the first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only makes INTEGER PRIMARY KEY an alias of the auto-incrementing rowid.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps always leave and enter Python as timezone-aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        # SQLite keeps text; a naive UTC value keeps comparisons between stored values right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _id() -> Column[int]:
    return Column("id", Id, primary_key=True, autoincrement=True)


def _created_at() -> Column[datetime]:
    return Column("created_at", UTCDateTime(), nullable=False)


ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    _id(),
    # customer_available, customer_held, card, or a system account: issuance, ...
    Column("kind", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    # Tracked accounts keep their balance here, in the same transaction as each posting.
    # System accounts (the store's side of every movement) are not tracked: their balance
    # is the sum of their postings, so that no single row becomes a hot spot.
    Column("tracked", Boolean, nullable=False),
    Column("balance", BigInteger, nullable=False, server_default=text("0")),
    _created_at(),
    CheckConstraint("balance >= 0", name="balance_not_negative"),
    CheckConstraint("tracked OR balance = 0", name="untracked_balance_zero"),
)
Index(
    "uq_ledger_accounts_system_kind_currency",
    ledger_accounts.c.kind,
    ledger_accounts.c.currency,
    unique=True,
    sqlite_where=text("NOT tracked"),
    postgresql_where=text("NOT tracked"),
)

customers = Table(
    "customers",
    metadata,
    _id(),
    Column("email", String(254), nullable=False, unique=True),
    Column("name", String(200), nullable=True),
    Column("password_hash", String(200), nullable=False),
    Column("region", String(2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("refund_preference", String(32), nullable=False),
    Column("available_account_id", Id, ForeignKey("ledger_accounts.id"), nullable=False),
    Column("held_account_id", Id, ForeignKey("ledger_accounts.id"), nullable=False),
    _created_at(),
    CheckConstraint(
        "refund_preference IN ('gift_card_balance', 'original_payment_method')",
        name="refund_preference_known",
    ),
)

staff = Table(
    "staff",
    metadata,
    _id(),
    Column("email", String(254), nullable=False, unique=True),
    Column("name", String(200), nullable=True),
    Column("password_hash", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("disabled_at", UTCDateTime(), nullable=True),
    _created_at(),
    CheckConstraint("role IN ('support', 'admin')", name="role_known"),
)

# Who each email belongs to (SPEC §1): one customer or one staff member, never both.
# Emails are stored normalized (trimmed, lower-cased), so the primary key makes the
# namespace one and case-insensitive; sign-up and staff creation both insert here, and a
# race between them is settled by that key.
identities = Table(
    "identities",
    metadata,
    Column("email", String(254), primary_key=True),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=True, unique=True),
    Column("staff_id", Id, ForeignKey("staff.id"), nullable=True, unique=True),
    CheckConstraint("(customer_id IS NULL) <> (staff_id IS NULL)", name="one_owner"),
)

api_keys = Table(
    "api_keys",
    metadata,
    _id(),
    Column("name", String(200), nullable=True),
    Column("role", String(16), nullable=False),
    Column("key_hash", LargeBinary(32), nullable=False, unique=True),
    # The first characters of the key, to recognise it in lists without revealing it.
    Column("prefix", String(16), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    _created_at(),
    CheckConstraint("role IN ('admin', 'merchant', 'support')", name="role_known"),
)

sessions = Table(
    "sessions",
    metadata,
    _id(),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=True),
    Column("staff_id", Id, ForeignKey("staff.id"), nullable=True),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    _created_at(),
    CheckConstraint("(customer_id IS NULL) <> (staff_id IS NULL)", name="one_principal"),
)

cards = Table(
    "cards",
    metadata,
    _id(),
    Column("serial", String(12), nullable=False, unique=True),
    Column("code_hash", LargeBinary(32), nullable=False, unique=True),
    Column("last4", String(4), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    # The state a frozen card returns to when unfrozen.
    Column("state_before_freeze", String(16), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("region", String(2), nullable=False),
    Column("account_id", Id, ForeignKey("ledger_accounts.id"), nullable=False, unique=True),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("activated_at", UTCDateTime(), nullable=True),
    Column("redeemed_at", UTCDateTime(), nullable=True),
    Column("redeemed_customer_id", Id, ForeignKey("customers.id"), nullable=True),
    _created_at(),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("kind IN ('digital', 'physical')", name="kind_known"),
    CheckConstraint(
        "state IN ('inactive', 'active', 'redeemed', 'frozen', 'cancelled')", name="state_known"
    ),
    CheckConstraint(
        "(state = 'redeemed') = (redeemed_customer_id IS NOT NULL)", name="redeemed_has_customer"
    ),
)
Index("ix_cards_redeemed_customer_id", cards.c.redeemed_customer_id)

card_events = Table(
    "card_events",
    metadata,
    _id(),
    Column("card_id", Id, ForeignKey("cards.id"), nullable=False),
    # issued, activated, redeemed, frozen, unfrozen, cancelled
    Column("type", String(32), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("reason", Text, nullable=True),
    Column("transaction_id", Id, nullable=True),
    Column("customer_id", Id, nullable=True),
    _created_at(),
    # For `replaced`: the new card issued in this card's stead (and, on the new card's
    # `issued` event, the card it replaces).
    Column("related_card_id", Id, nullable=True),
)
Index("ix_card_events_card_id", card_events.c.card_id)

journal_transactions = Table(
    "journal_transactions",
    metadata,
    _id(),
    # issue, activation, redemption, hold, capture, release, refund, adjustment, cancellation
    Column("type", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("description", String(500), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=True),
    Column("card_id", Id, ForeignKey("cards.id"), nullable=True),
    _created_at(),
    Column("payment_id", Id, ForeignKey("payments.id"), nullable=True),
)

Index("ix_journal_transactions_card_id", journal_transactions.c.card_id)
Index("ix_journal_transactions_customer_id", journal_transactions.c.customer_id)

postings = Table(
    "postings",
    metadata,
    _id(),
    Column("transaction_id", Id, ForeignKey("journal_transactions.id"), nullable=False),
    Column("account_id", Id, ForeignKey("ledger_accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    # The account's balance right after this posting; NULL on untracked system accounts.
    Column("balance_after", BigInteger, nullable=True),
    CheckConstraint("amount <> 0", name="amount_not_zero"),
    CheckConstraint("balance_after IS NULL OR balance_after >= 0", name="balance_after_ok"),
)
Index("ix_postings_account_id_id", postings.c.account_id, postings.c.id)
Index("ix_postings_transaction_id", postings.c.transaction_id)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    _id(),
    # Whose key it is: keys of different callers never collide.
    Column("scope", String(64), nullable=False),
    Column("key", String(255), nullable=False),
    # A keyed hash of the request: method, path and body. Never the body itself.
    Column("fingerprint", LargeBinary(32), nullable=False),
    # The answer, written in the same transaction as the claim and the effect.
    Column("response_status", Integer, nullable=True),
    Column("response_body", Text, nullable=True),
    _created_at(),
    UniqueConstraint("scope", "key", name="uq_idempotency_keys_scope_key"),
)
Index("ix_idempotency_keys_created_at", idempotency_keys.c.created_at)

# The abuse limits' units when there is no Redis (giftcard.limits): one row per unit an
# attempt holds on one rule and identity, until it leaves its window or is given back.
# The key names the rule and a hash of the identity, never an email or address itself.
limit_reservations = Table(
    "limit_reservations",
    metadata,
    _id(),
    Column("limit_key", String(200), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)
Index(
    "ix_limit_reservations_limit_key_expires_at",
    limit_reservations.c.limit_key,
    limit_reservations.c.expires_at,
)
Index("ix_limit_reservations_expires_at", limit_reservations.c.expires_at)

payments = Table(
    "payments",
    metadata,
    _id(),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=False),
    Column("order_id", String(255), nullable=False),
    Column("currency", String(3), nullable=False),
    # The order total, and how it is split: the balance's part and the rest, which the
    # store charges to another payment method.
    Column("amount", BigInteger, nullable=False),
    Column("gift_card_amount", BigInteger, nullable=False),
    Column("other_amount", BigInteger, nullable=False),
    # authorized, captured, voided, expired, refunded
    Column("status", String(16), nullable=False),
    Column("captured_amount", BigInteger, nullable=False, server_default=text("0")),
    Column("captured_gift_card_amount", BigInteger, nullable=False, server_default=text("0")),
    Column("refunded_amount", BigInteger, nullable=False, server_default=text("0")),
    Column("refunded_gift_card_amount", BigInteger, nullable=False, server_default=text("0")),
    # An authorization not captured by then is released by the sweeper.
    Column("hold_expires_at", UTCDateTime(), nullable=True),
    Column("actor", String(64), nullable=False),
    _created_at(),
    Column("updated_at", UTCDateTime(), nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(
        "gift_card_amount >= 0 AND other_amount >= 0 AND gift_card_amount + other_amount = amount",
        name="split_adds_up",
    ),
    CheckConstraint(
        "captured_amount >= 0 AND captured_amount <= amount "
        "AND captured_gift_card_amount >= 0 AND captured_gift_card_amount <= gift_card_amount "
        "AND captured_gift_card_amount <= captured_amount",
        name="captured_within_amount",
    ),
    CheckConstraint(
        "refunded_amount >= 0 AND refunded_amount <= captured_amount "
        "AND refunded_gift_card_amount >= 0 "
        "AND refunded_gift_card_amount <= captured_gift_card_amount "
        "AND refunded_gift_card_amount <= refunded_amount",
        name="refunded_within_captured",
    ),
    CheckConstraint(
        "status IN ('authorized', 'captured', 'voided', 'expired', 'refunded')",
        name="status_known",
    ),
)
# One live payment per order and customer: a store retrying without its idempotency key
# must not charge twice.
Index(
    "uq_payments_live_order",
    payments.c.customer_id,
    payments.c.order_id,
    unique=True,
    sqlite_where=text("status IN ('authorized', 'captured')"),
    postgresql_where=text("status IN ('authorized', 'captured')"),
)
Index(
    "ix_payments_hold_expires_at",
    payments.c.hold_expires_at,
    sqlite_where=text("status = 'authorized'"),
    postgresql_where=text("status = 'authorized'"),
)

refunds = Table(
    "refunds",
    metadata,
    _id(),
    Column("payment_id", Id, ForeignKey("payments.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("gift_card_amount", BigInteger, nullable=False),
    Column("to_gift_card_balance", BigInteger, nullable=False),
    Column("to_original_payment_method", BigInteger, nullable=False),
    Column("transaction_id", Id, ForeignKey("journal_transactions.id"), nullable=True),
    Column("actor", String(64), nullable=False),
    _created_at(),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint(
        "to_gift_card_balance >= 0 AND to_original_payment_method >= 0 "
        "AND to_gift_card_balance + to_original_payment_method = amount",
        name="split_adds_up",
    ),
)
Index("ix_refunds_payment_id", refunds.c.payment_id)

# The demo store's own orders. A real store keeps these in its own database; here they
# sit beside the payments they were paid with, written in the same transaction.
store_orders = Table(
    "store_orders",
    metadata,
    _id(),
    Column("order_id", String(64), nullable=False, unique=True),
    # What the shopper sees and types: short, random, and telling nothing of how many
    # orders the store has (`GC-7K4Q-2M`). `order_id` stays the checkout form's own key.
    Column("number", String(16), nullable=False, unique=True),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=False),
    Column("payment_id", Id, ForeignKey("payments.id"), nullable=False, unique=True),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    # The lines as bought (product, name, quantity, prices), as JSON: the catalog may
    # change later, an order must not.
    Column("items", Text, nullable=False),
    _created_at(),
    CheckConstraint("amount > 0", name="amount_positive"),
)
Index("ix_store_orders_customer_id_id", store_orders.c.customer_id, store_orders.c.id)

# Every email the service sends, written in the transaction that decided to send it and
# sent afterwards by a sender (giftcard.mail). A row holds no secret: the message is
# rendered when it is sent, from the row it refers to (a gift, a password reset), and a
# code or link in it is derived then with the server's secret key. `message_id` is fixed
# here, so that a message sent again after a crash carries the same Message-ID.
outbox_messages = Table(
    "outbox_messages",
    metadata,
    _id(),
    # gift, password_reset, email_changed, password_changed
    Column("kind", String(32), nullable=False),
    Column("recipient", String(254), nullable=False),
    # The gift, password reset or customer the message is about.
    Column("ref_id", Id, nullable=True),
    # Values the message shows that are not secret and may change later, as JSON.
    Column("payload", Text, nullable=True),
    Column("message_id", String(255), nullable=False, unique=True),
    # pending (waiting or being sent), sent, failed (gave up)
    Column("status", String(16), nullable=False),
    # When it may be sent next: its delivery time, then each retry's.
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # A sender's claim: while it lasts no other sender takes the message.
    Column("claim_token", String(32), nullable=True),
    Column("claimed_until", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("sent_at", UTCDateTime(), nullable=True),
    _created_at(),
    CheckConstraint("status IN ('pending', 'sent', 'failed')", name="status_known"),
)
Index(
    "ix_outbox_messages_due",
    outbox_messages.c.next_attempt_at,
    sqlite_where=text("status = 'pending'"),
    postgresql_where=text("status = 'pending'"),
)
# The given-up messages, counted for /metrics every few seconds: without it the count
# would read every message ever sent.
Index(
    "ix_outbox_messages_failed",
    outbox_messages.c.id,
    sqlite_where=text("status = 'failed'"),
    postgresql_where=text("status = 'failed'"),
)
Index("ix_outbox_messages_kind_ref_id", outbox_messages.c.kind, outbox_messages.c.ref_id)

# E-gift cards: a digital card bought for someone and delivered by email. The code is
# not stored: it is derived from `code_seed` with the server's secret key whenever the
# email is rendered (giftcard.codes.derive_code), so a resend carries the same code and a
# copy of the database alone reveals none.
gifts = Table(
    "gifts",
    metadata,
    _id(),
    Column("card_id", Id, ForeignKey("cards.id"), nullable=False, unique=True),
    Column("code_seed", LargeBinary(32), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("region", String(2), nullable=False),
    Column("recipient_email", String(254), nullable=False),
    Column("recipient_name", String(200), nullable=True),
    Column("sender_name", String(200), nullable=False),
    Column("message", Text, nullable=True),
    Column("deliver_at", UTCDateTime(), nullable=False),
    Column("purchaser_customer_id", Id, ForeignKey("customers.id"), nullable=True),
    # scheduled (waiting to be sent), sent, failed; "redeemed" is read from the card.
    Column("status", String(16), nullable=False),
    Column("sent_at", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("actor", String(64), nullable=False),
    _created_at(),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("status IN ('scheduled', 'sent', 'failed')", name="status_known"),
)
Index("ix_gifts_purchaser_customer_id_id", gifts.c.purchaser_customer_id, gifts.c.id)

# "Forgot your password?": one row per link sent. The token is derived from `token_seed`
# with the server's secret key when the email is rendered; it is looked up by its keyed
# hash. A link is good once, for an hour.
password_resets = Table(
    "password_resets",
    metadata,
    _id(),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=False),
    Column("token_seed", LargeBinary(32), nullable=False),
    Column("token_hash", LargeBinary(32), nullable=False, unique=True),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime(), nullable=True),
    _created_at(),
)
Index("ix_password_resets_customer_id", password_resets.c.customer_id)

# A support adjustment of a customer's balance: a signed amount with a reason and a note.
# Small ones are applied at once; one whose size exceeds the approval threshold waits
# `pending_approval` until a different staff member approves (it is then applied) or
# rejects it. `transaction_id` is the journal transaction that applied it.
adjustments = Table(
    "adjustments",
    metadata,
    _id(),
    Column("customer_id", Id, ForeignKey("customers.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("decided_by", String(64), nullable=True),
    Column("decided_at", UTCDateTime(), nullable=True),
    Column("decision_note", Text, nullable=True),
    Column("transaction_id", Id, ForeignKey("journal_transactions.id"), nullable=True),
    _created_at(),
    CheckConstraint("amount <> 0", name="amount_not_zero"),
    CheckConstraint(
        "reason IN ('goodwill', 'correction', 'fraud_reversal', 'lost_card_replacement', 'other')",
        name="reason_known",
    ),
    CheckConstraint("status IN ('applied', 'pending_approval', 'rejected')", name="status_known"),
    CheckConstraint(
        "(status = 'applied') = (transaction_id IS NOT NULL)", name="applied_has_transaction"
    ),
)
Index("ix_adjustments_customer_id_id", adjustments.c.customer_id, adjustments.c.id)
Index(
    "ix_adjustments_pending",
    adjustments.c.id,
    sqlite_where=text("status = 'pending_approval'"),
    postgresql_where=text("status = 'pending_approval'"),
)

# The audit log: every staff and API-key action that changes or reveals something.
# Append-only and hash-chained (giftcard.audit): each entry's `hash` is SHA-256 over a
# canonical encoding of its fields and `prev_hash`, the hash of the entry before it.
# `audit_chain` is the head of the chain, one row: appending takes its row lock, so
# entries are chained one after another whatever the concurrency, and the head's
# `last_hash` lets a check see entries removed from the end.
audit_log = Table(
    "audit_log",
    metadata,
    _id(),
    # staff:3, api_key:2
    Column("actor", String(64), nullable=False),
    # support, admin, merchant
    Column("actor_role", String(16), nullable=False),
    # e.g. card.lookup, card.freeze, adjustment.create, adjustment.approve
    Column("action", String(64), nullable=False),
    # the public id of what it acted on (card_…, cus_…, adj_…), or a search's words
    Column("target", String(200), nullable=True),
    # an adjustment's reason code, or the free-text reason of a card's freeze, cancel, ...
    Column("reason", String(500), nullable=True),
    Column("note", Text, nullable=True),
    # ok, or the error code it was refused with (card look-ups that found nothing too)
    Column("outcome", String(64), nullable=False),
    # more about it, canonical JSON (never a code, a password or a token)
    Column("detail", Text, nullable=True),
    Column("request_id", String(64), nullable=True),
    _created_at(),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
)
Index("ix_audit_log_actor_id", audit_log.c.actor, audit_log.c.id)
Index("ix_audit_log_target_id", audit_log.c.target, audit_log.c.id)

audit_chain = Table(
    "audit_chain",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_id", Id, nullable=False),
    Column("last_hash", String(64), nullable=False),
    CheckConstraint("id = 1", name="one_row"),
)
