"""Paying at checkout with the gift card balance: authorize (hold), capture, void,
refund, and the release of holds nobody captured.

A payment covers one order. Its `gift_card_amount` is what the balance pays,
min(requested, available, order total); `other_amount` is the rest, which the store
charges to another payment method. Money moves only through the ledger:

- authorize (capture=false): available → held (a HOLD; `total` is unchanged)
- capture at once (capture=true): available → the store's payments account (a PAYMENT)
- capture of a hold: held → payments for the captured part (a CAPTURE), and held →
  available for the rest (a RELEASE)
- void, or a hold past its expiry: held → available (a RELEASE)
- refund: payments → available for the gift-card part, which is refunded first; the
  rest was paid by another method and goes back there, or, when the customer prefers,
  store credit → available in the same transaction (a REFUND)

Races are settled by the database: the customer's available account row is locked
before the amount is decided, and every change of a payment is a guarded UPDATE on its
row (`... WHERE status = 'authorized'`, `... WHERE captured_amount - refunded_amount >=
:amount`) whose row count says who won.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import BigInteger, Row, any_, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import ids, ledger
from giftcard.clock import Clock
from giftcard.customers import Customer, RefundPreference, customer_from_row
from giftcard.db import batches, direct, riders
from giftcard.db.engine import Database, is_unique_violation
from giftcard.db.tables import customers, ledger_accounts, payments, refunds
from giftcard.errors import ErrorCode, GiftcardError, LedgerInvariantError, validation_error
from giftcard.money import AMOUNT_MINOR_MAX, format_minor
from giftcard.unit_of_work import RunAlone, UnitOfWork, run_together

ORDER_ID_LENGTH_MAX = 255
# Holds released per sweep; the sweeper loops until none are left.
EXPIRED_HOLDS_PER_SWEEP_MAX = 500
# A payment shows its newest refunds; the rest are paged with list_refunds.
REFUNDS_SHOWN_MAX = 10
REFUND_PAGE_SIZE_DEFAULT = 20
REFUND_PAGE_SIZE_MAX = 100

UseBalance = Literal["max", "none"] | int


class PaymentStatus(enum.StrEnum):
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    VOIDED = "voided"
    EXPIRED = "expired"
    REFUNDED = "refunded"


@dataclass(frozen=True)
class Refund:
    id: int
    payment_id: int
    amount: int
    currency: str
    to_gift_card_balance: int
    to_original_payment_method: int
    created_at: datetime


@dataclass(frozen=True)
class Payment:
    id: int
    status: PaymentStatus
    customer_id: int
    order_id: str
    amount: int
    currency: str
    gift_card_amount: int
    other_amount: int
    captured_amount: int
    captured_gift_card_amount: int
    refunded_amount: int
    refunded_gift_card_amount: int
    hold_expires_at: datetime | None
    created_at: datetime
    # The newest refunds (at most REFUNDS_SHOWN_MAX), newest first, whether there are
    # more, and where all of them went.
    refunds: tuple[Refund, ...] = ()
    refunds_has_more: bool = False
    refunded_to_gift_card_balance: int = 0
    refunded_to_original_payment_method: int = 0

    @property
    def captured_other_amount(self) -> int:
        return self.captured_amount - self.captured_gift_card_amount

    @property
    def is_captured(self) -> bool:
        return self.status in (PaymentStatus.CAPTURED, PaymentStatus.REFUNDED)

    @property
    def gift_card_part(self) -> int:
        """What the balance pays: once captured, what was captured from it; before,
        what is held (or planned) for the order."""
        return self.captured_gift_card_amount if self.is_captured else self.gift_card_amount

    @property
    def other_part(self) -> int:
        """What the store must charge to another payment method: once captured, the
        captured amount less the balance's part (a partial capture lowers it); before,
        the order's amount less the balance's part."""
        return self.captured_other_amount if self.is_captured else self.other_amount


@dataclass(frozen=True)
class RefundPage:
    items: list[Refund]
    has_more: bool


@dataclass(frozen=True)
class PaymentRequest:
    customer_id: int
    order_id: str
    amount: int
    currency: str
    use_balance: UseBalance
    capture: bool = True


def payment_from_row(row: Row[Any]) -> Payment:
    return Payment(
        id=row.id,
        status=PaymentStatus(row.status),
        customer_id=row.customer_id,
        order_id=row.order_id,
        amount=row.amount,
        currency=row.currency,
        gift_card_amount=row.gift_card_amount,
        other_amount=row.other_amount,
        captured_amount=row.captured_amount,
        captured_gift_card_amount=row.captured_gift_card_amount,
        refunded_amount=row.refunded_amount,
        refunded_gift_card_amount=row.refunded_gift_card_amount,
        hold_expires_at=row.hold_expires_at,
        created_at=row.created_at,
    )


def check_request(request: PaymentRequest) -> None:
    if type(request.amount) is not int or not 0 < request.amount <= AMOUNT_MINOR_MAX:
        raise validation_error(
            f"amount must be a whole number of minor units from 1 to {AMOUNT_MINOR_MAX}.",
            "amount",
        )
    if not 0 < len(request.order_id) <= ORDER_ID_LENGTH_MAX or not request.order_id.isprintable():
        raise validation_error(
            f"order_id must be 1 to {ORDER_ID_LENGTH_MAX} printable characters.", "order_id"
        )
    use = request.use_balance
    if isinstance(use, bool) or not (use in ("max", "none") or isinstance(use, int)):
        raise validation_error('use_balance is "max", "none" or an amount.', "use_balance")
    if isinstance(use, int) and not 0 <= use <= request.amount:
        raise validation_error("use_balance must be from 0 to the order's amount.", "use_balance")


def balance_part(use: UseBalance, available: int, order_amount: int) -> int:
    """min(requested use, available balance, order total): what the balance pays."""
    if use == "max":
        requested = order_amount
    elif use == "none":
        requested = 0
    else:
        requested = int(use)
    return max(0, min(requested, available, order_amount))


# The statements of a payment, built once (see giftcard.ledger).
_CUSTOMER = select(customers).where(customers.c.id == bindparam("b_id"))
# The customer with their available balance, whose row a payment locks (on PostgreSQL;
# a SQLite write transaction holds the whole database) until it ends, so that two
# payments cannot both decide to spend the same money.
_CUSTOMER_AND_BALANCE = (
    select(customers, ledger_accounts.c.balance.label("available_balance"))
    .join_from(customers, ledger_accounts, ledger_accounts.c.id == customers.c.available_account_id)
    .where(customers.c.id == bindparam("b_id"))
)
_CUSTOMER_AND_BALANCE_LOCKED = _CUSTOMER_AND_BALANCE.with_for_update(of=ledger_accounts)
_INSERT_PAYMENT = insert(payments).returning(*payments.c)
_PAYMENT = select(payments).where(payments.c.id == bindparam("b_id"))
_PAYMENT_LOCKED = _PAYMENT.with_for_update()


async def create(
    uow: UnitOfWork, request: PaymentRequest, *, hold_ttl_s: int, actor: str
) -> Payment:
    """Apply the balance to an order: captured at once, or held until captured. On
    PostgreSQL, payments that come together commit together (see :func:`_pay_batch`)."""
    check_request(request)
    if uow.db.reads_committed:
        paid = await _BATCHES.submit(uow.db, _Waiting(uow, request, hold_ttl_s, actor))
        if isinstance(paid, Payment):
            return paid

    async def work(connection: AsyncConnection) -> Payment:
        return await _pay(
            connection, request, hold_ttl_s=hold_ttl_s, actor=actor, now=uow.clock.now()
        )

    return await uow.run(work)


async def pay(
    connection: AsyncConnection,
    request: PaymentRequest,
    *,
    hold_ttl_s: int,
    actor: str,
    now: datetime,
) -> Payment:
    """:func:`create`'s work inside a transaction the caller runs, for a use case that
    must write its own rows in the same transaction (a store's order and its payment)."""
    check_request(request)
    return await _pay(connection, request, hold_ttl_s=hold_ttl_s, actor=actor, now=now)


async def _pay(
    connection: AsyncConnection,
    request: PaymentRequest,
    *,
    hold_ttl_s: int,
    actor: str,
    now: datetime,
) -> Payment:
    """Pay for a request already checked by :func:`check_request`."""
    query = (
        _CUSTOMER_AND_BALANCE_LOCKED
        if connection.dialect.name == "postgresql"
        else _CUSTOMER_AND_BALANCE
    )
    found = (await riders.execute(connection, query, {"b_id": request.customer_id})).one_or_none()
    if found is None:
        raise _no_customer(request.customer_id)
    customer = customer_from_row(found)
    if request.currency != customer.currency:
        raise GiftcardError(
            ErrorCode.CURRENCY_MISMATCH,
            f"This customer pays in {customer.currency}, not {request.currency}.",
            param="currency",
        )
    available = int(found.available_balance)
    gift = balance_part(request.use_balance, available, request.amount)
    status = PaymentStatus.CAPTURED if request.capture else PaymentStatus.AUTHORIZED
    values = _payment_values(request, customer, gift, status, hold_ttl_s, actor, now)
    row = await _insert(connection, request, values)
    if gift:
        entry = await _payment_entry(connection, customer, row.id, gift, status, actor)
        await ledger.post(connection, entry, now=now)
    # The row as inserted is the payment: applying it moves balances, not the row.
    return payment_from_row(row)


async def _customer(connection: AsyncConnection, customer_id: int) -> Customer:
    row = (await direct.execute(connection, _CUSTOMER, {"b_id": customer_id})).one_or_none()
    if row is None:
        raise _no_customer(customer_id)
    return customer_from_row(row)


def _no_customer(customer_id: int) -> GiftcardError:
    return GiftcardError(
        ErrorCode.NOT_FOUND,
        f"No customer {ids.format_id(ids.CUSTOMER, customer_id)}.",
        param="customer_id",
    )


def _payment_values(
    request: PaymentRequest,
    customer: Customer,
    gift: int,
    status: PaymentStatus,
    hold_ttl_s: int,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    captured = status is PaymentStatus.CAPTURED
    return {
        "customer_id": customer.id,
        "order_id": request.order_id,
        "currency": customer.currency,
        "amount": request.amount,
        "gift_card_amount": gift,
        "other_amount": request.amount - gift,
        "status": status.value,
        "captured_amount": request.amount if captured else 0,
        "captured_gift_card_amount": gift if captured else 0,
        "hold_expires_at": None if captured else now + timedelta(seconds=hold_ttl_s),
        "actor": actor,
        "created_at": now,
        "updated_at": now,
    }


async def _insert(
    connection: AsyncConnection, request: PaymentRequest, values: dict[str, Any]
) -> Any:
    try:
        return (await direct.execute(connection, _INSERT_PAYMENT, values)).one()
    except IntegrityError as error:
        if is_unique_violation(error):
            raise GiftcardError(
                ErrorCode.INVALID_STATE,
                f"Order {request.order_id!r} already has a live payment for this customer. "
                "Void it first, or retry with the same Idempotency-Key.",
                param="order_id",
            ) from None
        raise


async def _payment_entry(
    connection: AsyncConnection,
    customer: Customer,
    payment_id: int,
    gift: int,
    status: PaymentStatus,
    actor: str,
) -> ledger.Entry:
    """What the balance pays for a payment: to the store at once, or held."""
    currency = customer.currency
    if status is PaymentStatus.CAPTURED:
        entry_type = ledger.TransactionType.PAYMENT
        target = await ledger.system_posting(
            connection, ledger.AccountKind.PAYMENTS, currency, gift
        )
        description = f"Paid {format_minor(gift, currency)} for an order"
    else:
        entry_type = ledger.TransactionType.HOLD
        target = ledger.Posting(customer.held_account_id, gift)
        description = f"Held {format_minor(gift, currency)} for an order"
    return ledger.Entry(
        type=entry_type,
        currency=currency,
        description=description,
        actor=actor,
        customer_id=customer.id,
        payment_id=payment_id,
        postings=[ledger.Posting(customer.available_account_id, -gift), target],
    )


@dataclass(frozen=True)
class _Waiting:
    """A payment waiting to go in the next batch."""

    uow: UnitOfWork
    request: PaymentRequest
    hold_ttl_s: int
    actor: str


# The customers of many payments with their available balances, whose rows a batch
# locks in ascending id order, as the ledger does.
_CUSTOMERS_AND_BALANCES_LOCKED = (
    select(customers, ledger_accounts.c.balance.label("available_balance"))
    .join_from(customers, ledger_accounts, ledger_accounts.c.id == customers.c.available_account_id)
    .where(customers.c.id == any_(bindparam("b_ids", type_=ARRAY(BigInteger))))
    .order_by(ledger_accounts.c.id)
    .with_for_update(of=ledger_accounts)
)
_INSERT_PAYMENTS = insert(payments).returning(*payments.c, sort_by_parameter_order=True)


async def _pay_batch(db: Database, batch: Sequence[_Waiting]) -> list[Payment | RunAlone]:
    """Group commit of payments on PostgreSQL (see
    :func:`~giftcard.unit_of_work.run_together`): the payments of this process that
    waited while the last batch ran go in one transaction. Their customers' balances
    are locked together, then each payment takes its part of its customer's balance in
    its turn, as it would have alone after those before it (many payments from one
    balance share one lock instead of queueing for it); their rows are written by one
    INSERT and their journal transactions by :func:`giftcard.ledger.post_many`. A payment
    for a customer not found or in another currency is left to run by itself, and is
    refused as before; an order that already has a live payment fails the batch, whose
    payments then each run by themselves."""
    return await run_together(
        db,
        [waiting.uow for waiting in batch],
        [(waiting.request.customer_id, waiting.request.order_id) for waiting in batch],
        functools.partial(_settle, batch),
        what="payments",
    )


async def _settle(
    batch: Sequence[_Waiting], connection: AsyncConnection, going: Sequence[int], now: datetime
) -> dict[int, Payment]:
    customer_ids = sorted({batch[n].request.customer_id for n in going})
    rows = (
        await direct.execute(connection, _CUSTOMERS_AND_BALANCES_LOCKED, {"b_ids": customer_ids})
    ).all()
    found = {row.id: customer_from_row(row) for row in rows}
    available = {row.id: int(row.available_balance) for row in rows}
    planned: list[tuple[int, Customer, int, PaymentStatus]] = []
    for n in going:
        request = batch[n].request
        customer = found.get(request.customer_id)
        if customer is None or request.currency != customer.currency:
            continue
        gift = balance_part(request.use_balance, available[customer.id], request.amount)
        available[customer.id] -= gift
        status = PaymentStatus.CAPTURED if request.capture else PaymentStatus.AUTHORIZED
        planned.append((n, customer, gift, status))
    if not planned:
        return {}
    inserted = (
        await connection.execute(
            _INSERT_PAYMENTS,
            [
                _payment_values(
                    batch[n].request,
                    customer,
                    gift,
                    status,
                    batch[n].hold_ttl_s,
                    batch[n].actor,
                    now,
                )
                for n, customer, gift, status in planned
            ],
        )
    ).all()
    entries = [
        await _payment_entry(connection, customer, row.id, gift, status, batch[n].actor)
        for (n, customer, gift, status), row in zip(planned, inserted, strict=True)
        if gift
    ]
    if entries:
        await ledger.post_many(connection, entries, now=now)
    return {n: payment_from_row(row) for (n, _, _, _), row in zip(planned, inserted, strict=True)}


_BATCHES: batches.PerDatabase[_Waiting, Payment | RunAlone] = batches.PerDatabase(_pay_batch)


async def _get(connection: AsyncConnection, payment_id: int, *, lock: bool = False) -> Payment:
    """The payment with its refunds; with `lock`, its row stays locked (PostgreSQL; a
    SQLite write transaction holds the whole database already) until the transaction
    ends, so that what is decided from it still holds when it is written."""
    query = _PAYMENT_LOCKED if lock and connection.dialect.name == "postgresql" else _PAYMENT
    row = (await connection.execute(query, {"b_id": payment_id})).one_or_none()
    if row is None:
        raise GiftcardError(
            ErrorCode.NOT_FOUND, f"No payment {ids.format_id(ids.PAYMENT, payment_id)}."
        )
    if row.refunded_amount == 0:
        # Every refund is of a positive amount: none was made.
        return payment_from_row(row)
    newest = await _refunds(connection, row.id, row.currency, limit=REFUNDS_SHOWN_MAX)
    to_balance, to_method = (
        await connection.execute(
            select(
                func.coalesce(func.sum(refunds.c.to_gift_card_balance), 0),
                func.coalesce(func.sum(refunds.c.to_original_payment_method), 0),
            ).where(refunds.c.payment_id == payment_id)
        )
    ).one()
    return replace(
        payment_from_row(row),
        refunds=tuple(newest.items),
        refunds_has_more=newest.has_more,
        refunded_to_gift_card_balance=int(to_balance),
        refunded_to_original_payment_method=int(to_method),
    )


async def _refunds(
    connection: AsyncConnection,
    payment_id: int,
    currency: str,
    *,
    limit: int,
    starting_after: int | None = None,
) -> RefundPage:
    query = (
        select(refunds)
        .where(refunds.c.payment_id == payment_id)
        .order_by(refunds.c.id.desc())
        .limit(limit + 1)
    )
    if starting_after is not None:
        query = query.where(refunds.c.id < starting_after)
    rows = (await connection.execute(query)).all()
    return RefundPage(
        [
            Refund(
                r.id,
                r.payment_id,
                r.amount,
                currency,
                r.to_gift_card_balance,
                r.to_original_payment_method,
                r.created_at,
            )
            for r in rows[:limit]
        ],
        len(rows) > limit,
    )


async def list_refunds(
    db: Database,
    payment_id: int,
    *,
    limit: int = REFUND_PAGE_SIZE_DEFAULT,
    starting_after: int | None = None,
) -> RefundPage:
    """A payment's refunds, newest first, a page at a time."""
    if not 1 <= limit <= REFUND_PAGE_SIZE_MAX:
        raise validation_error(f"limit must be from 1 to {REFUND_PAGE_SIZE_MAX}.", "limit")
    async with db.transaction(write=False) as connection:
        payment = (
            await connection.execute(select(payments.c.currency).where(payments.c.id == payment_id))
        ).one_or_none()
        if payment is None:
            raise GiftcardError(
                ErrorCode.NOT_FOUND, f"No payment {ids.format_id(ids.PAYMENT, payment_id)}."
            )
        return await _refunds(
            connection, payment_id, payment.currency, limit=limit, starting_after=starting_after
        )


async def get(db: Database, payment_id: int) -> Payment:
    async with db.transaction(write=False) as connection:
        return await _get(connection, payment_id)


async def capture(uow: UnitOfWork, payment_id: int, *, amount: int | None, actor: str) -> Payment:
    """Capture an authorized payment, in full or in part; the uncaptured part of the
    hold goes back to the available balance. The balance's part is captured first."""

    async def work(connection: AsyncConnection) -> Payment:
        now = uow.clock.now()
        current = await _get(connection, payment_id)
        wanted = current.amount if amount is None else amount
        if type(wanted) is not int or not 0 < wanted <= current.amount:
            raise validation_error(
                f"amount must be from 1 to the authorized {current.amount}.", "amount"
            )
        captured_gift = min(wanted, current.gift_card_amount)
        claimed = await connection.execute(
            update(payments)
            .where(
                payments.c.id == payment_id,
                payments.c.status == PaymentStatus.AUTHORIZED.value,
                payments.c.hold_expires_at > now,
            )
            .values(
                status=PaymentStatus.CAPTURED.value,
                captured_amount=wanted,
                captured_gift_card_amount=captured_gift,
                updated_at=now,
            )
        )
        if claimed.rowcount != 1:
            raise await _not_in_state(connection, payment_id, "captured", now)
        customer = await _customer(connection, current.customer_id)
        await _settle_hold(connection, customer, current, captured_gift, actor, now)
        return await _get(connection, payment_id)

    return await uow.run(work)


async def _settle_hold(
    connection: AsyncConnection,
    customer: Customer,
    payment: Payment,
    captured_gift: int,
    actor: str,
    now: datetime,
) -> None:
    """Move a hold's money: the captured part to the store, the rest back to available."""
    currency = payment.currency
    released = payment.gift_card_amount - captured_gift
    if captured_gift:
        await ledger.post(
            connection,
            ledger.Entry(
                type=ledger.TransactionType.CAPTURE,
                currency=currency,
                description=f"Captured {format_minor(captured_gift, currency)} for an order",
                actor=actor,
                customer_id=customer.id,
                payment_id=payment.id,
                postings=[
                    ledger.Posting(customer.held_account_id, -captured_gift),
                    await ledger.system_posting(
                        connection, ledger.AccountKind.PAYMENTS, currency, captured_gift
                    ),
                ],
            ),
            now=now,
        )
    if released:
        await _release(connection, customer, payment.id, released, actor, now)


async def _release(
    connection: AsyncConnection,
    customer: Customer,
    payment_id: int,
    amount: int,
    actor: str,
    now: datetime,
) -> None:
    await ledger.post(
        connection,
        ledger.Entry(
            type=ledger.TransactionType.RELEASE,
            currency=customer.currency,
            description=f"Released {format_minor(amount, customer.currency)} held for an order",
            actor=actor,
            customer_id=customer.id,
            payment_id=payment_id,
            postings=[
                ledger.Posting(customer.held_account_id, -amount),
                ledger.Posting(customer.available_account_id, amount),
            ],
        ),
        now=now,
    )


async def _release_hold(
    connection: AsyncConnection, payment: Payment, actor: str, now: datetime
) -> None:
    """Return the whole of a payment's hold to the available balance."""
    if payment.gift_card_amount:
        customer = await _customer(connection, payment.customer_id)
        await _release(connection, customer, payment.id, payment.gift_card_amount, actor, now)


async def void(uow: UnitOfWork, payment_id: int, *, actor: str) -> Payment:
    """Cancel an authorized payment: the whole hold returns to the available balance."""

    async def work(connection: AsyncConnection) -> Payment:
        now = uow.clock.now()
        claimed = await connection.execute(
            update(payments)
            .where(
                payments.c.id == payment_id,
                payments.c.status == PaymentStatus.AUTHORIZED.value,
                # An expired hold is the sweeper's to release, as it is for capture.
                payments.c.hold_expires_at > now,
            )
            .values(status=PaymentStatus.VOIDED.value, updated_at=now)
        )
        if claimed.rowcount != 1:
            raise await _not_in_state(connection, payment_id, "voided", now)
        current = await _get(connection, payment_id)
        await _release_hold(connection, current, actor, now)
        return current

    return await uow.run(work)


async def _not_in_state(
    connection: AsyncConnection, payment_id: int, wanted: str, now: datetime
) -> GiftcardError:
    current = await _get(connection, payment_id)
    status = current.status
    if (
        status is PaymentStatus.AUTHORIZED
        and current.hold_expires_at is not None
        and current.hold_expires_at <= now
    ):
        return GiftcardError(
            ErrorCode.INVALID_STATE,
            "This authorization has expired; its hold is being released. Create a new payment.",
        )
    return GiftcardError(
        ErrorCode.INVALID_STATE, f"This payment is {status.value} and cannot be {wanted}."
    )


async def refund(uow: UnitOfWork, payment_id: int, *, amount: int, actor: str) -> Refund:
    """Give back part or all of what a payment captured. The balance's part is refunded
    first, always to the balance; the rest follows the customer's refund preference."""
    if type(amount) is not int or not 0 < amount <= AMOUNT_MINOR_MAX:
        raise validation_error("amount must be a positive whole number of minor units.", "amount")

    async def work(connection: AsyncConnection) -> Refund:
        return await _give_back(
            connection, payment_id, amount=amount, actor=actor, now=uow.clock.now()
        )

    return await uow.run(work)


async def _give_back(
    connection: AsyncConnection, payment_id: int, *, amount: int, actor: str, now: datetime
) -> Refund:
    """:func:`refund`'s work, for an amount it has checked."""
    current = await _get(connection, payment_id, lock=True)
    if current.status not in (PaymentStatus.CAPTURED,):
        raise GiftcardError(
            ErrorCode.INVALID_STATE,
            f"Only a captured payment can be refunded; this one is {current.status.value}.",
        )
    refundable = current.captured_amount - current.refunded_amount
    if amount > refundable:
        raise GiftcardError(
            ErrorCode.INVALID_STATE,
            f"At most {refundable} of this payment can still be refunded.",
            param="amount",
        )
    gift_part = min(amount, current.captured_gift_card_amount - current.refunded_gift_card_amount)
    claimed = await connection.execute(
        update(payments)
        .where(
            payments.c.id == payment_id,
            payments.c.status == PaymentStatus.CAPTURED.value,
            payments.c.refunded_amount == current.refunded_amount,
        )
        .values(
            refunded_amount=payments.c.refunded_amount + amount,
            refunded_gift_card_amount=payments.c.refunded_gift_card_amount + gift_part,
            status=PaymentStatus.REFUNDED.value
            if current.refunded_amount + amount == current.captured_amount
            else PaymentStatus.CAPTURED.value,
            updated_at=now,
        )
    )
    if claimed.rowcount != 1:
        raise LedgerInvariantError("a locked payment changed under its refund")
    customer = await _customer(connection, current.customer_id)
    other_part = amount - gift_part
    to_balance_other = (
        other_part if customer.refund_preference is RefundPreference.GIFT_CARD_BALANCE else 0
    )
    transaction_id = await _credit_refund(
        connection, customer, payment_id, gift_part, to_balance_other, actor, now
    )
    refund_id = int(
        (
            await connection.execute(
                insert(refunds)
                .values(
                    payment_id=payment_id,
                    amount=amount,
                    gift_card_amount=gift_part,
                    to_gift_card_balance=gift_part + to_balance_other,
                    to_original_payment_method=other_part - to_balance_other,
                    transaction_id=transaction_id,
                    actor=actor,
                    created_at=now,
                )
                .returning(refunds.c.id)
            )
        ).scalar_one()
    )
    return Refund(
        refund_id,
        payment_id,
        amount,
        current.currency,
        gift_part + to_balance_other,
        other_part - to_balance_other,
        now,
    )


async def _credit_refund(
    connection: AsyncConnection,
    customer: Customer,
    payment_id: int,
    gift_part: int,
    other_part_to_balance: int,
    actor: str,
    now: datetime,
) -> int | None:
    total = gift_part + other_part_to_balance
    if not total:
        return None
    currency = customer.currency
    sources = []
    if gift_part:
        sources.append(
            await ledger.system_posting(
                connection, ledger.AccountKind.PAYMENTS, currency, -gift_part
            )
        )
    if other_part_to_balance:
        sources.append(
            await ledger.system_posting(
                connection, ledger.AccountKind.STORE_CREDIT, currency, -other_part_to_balance
            )
        )
    posted = await ledger.post(
        connection,
        ledger.Entry(
            type=ledger.TransactionType.REFUND,
            currency=currency,
            description=f"Refund of {format_minor(total, currency)} to your gift card balance",
            actor=actor,
            customer_id=customer.id,
            payment_id=payment_id,
            postings=[*sources, ledger.Posting(customer.available_account_id, total)],
        ),
        now=now,
    )
    return posted.transaction_id


async def expire_holds(db: Database, *, clock: Clock, actor: str = "system:hold-sweeper") -> int:
    """Release every authorization whose hold has expired; returns how many. Safe with
    several servers sweeping at once: each hold is claimed by a guarded UPDATE."""
    released = 0
    while True:
        now = clock.now()
        async with db.transaction(write=False) as connection:
            due = (
                (
                    await connection.execute(
                        select(payments.c.id)
                        .where(
                            payments.c.status == PaymentStatus.AUTHORIZED.value,
                            payments.c.hold_expires_at <= now,
                        )
                        .order_by(payments.c.hold_expires_at)
                        .limit(EXPIRED_HOLDS_PER_SWEEP_MAX)
                    )
                )
                .scalars()
                .all()
            )
        if not due:
            return released
        for payment_id in due:
            if await _expire_one(db, int(payment_id), actor=actor, now=now):
                released += 1
        if len(due) < EXPIRED_HOLDS_PER_SWEEP_MAX:
            return released


async def _expire_one(db: Database, payment_id: int, *, actor: str, now: datetime) -> bool:
    async def work(connection: AsyncConnection) -> bool:
        claimed = await connection.execute(
            update(payments)
            .where(
                payments.c.id == payment_id,
                payments.c.status == PaymentStatus.AUTHORIZED.value,
                payments.c.hold_expires_at <= now,
            )
            .values(status=PaymentStatus.EXPIRED.value, updated_at=now)
        )
        if claimed.rowcount != 1:
            return False
        await _release_hold(connection, await _get(connection, payment_id), actor, now)
        return True

    return await db.run(work)
