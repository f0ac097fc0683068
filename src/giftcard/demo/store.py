"""The demo store: a small catalog, carts priced on the server, and the store's orders.

The store plays the part of a shop's back end. It never touches a balance: an order is
paid through `payments.pay`, as a real store's server would through
`POST /v1/payments`, and its row is written in the same transaction as its payment, so
there is never a payment without an order or an order without a payment. Refunds go
through `payments.refund` likewise.

A cart is only product ids and quantities; prices come from the catalog, in the
shopper's currency, every time a cart is shown or paid.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import payments
from giftcard.clock import Clock
from giftcard.customers import Customer, RefundPreference
from giftcard.db.engine import Database, is_unique_violation
from giftcard.db.tables import payments as payments_table
from giftcard.db.tables import store_orders
from giftcard.errors import ErrorCode, GiftcardError, validation_error
from giftcard.money import CURRENCY_EXPONENTS
from giftcard.payments import Payment, PaymentRequest, PaymentStatus, Refund, UseBalance
from giftcard.unit_of_work import UnitOfWork

QUANTITY_MAX = 10
# "10" is the longest sensible quantity; longer input is refused before it is read.
QUANTITY_INPUT_LENGTH_MAX = 4
ORDERS_SHOWN_MAX = 50
ORDER_ID_PREFIX = "ord_"
_ORDER_ID = re.compile(r"ord_[0-9a-f]{32}", re.ASCII)
# Order numbers for shoppers: `GC-` and six characters of Crockford's base32 (no I, L, O
# or U to misread), about a billion of them, random so that they reveal no count.
ORDER_NUMBER_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ORDER_NUMBER_LENGTH = 6
ORDER_NUMBER_ATTEMPTS_MAX = 8
# Longer than any way of writing a number (spaces, dashes) a shopper could paste.
ORDER_NUMBER_INPUT_LENGTH_MAX = 32
_ORDER_NUMBER = re.compile(r"GC-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{2}", re.ASCII)
# What Crockford's base32 reads as the digit it looks like.
_MISREAD = str.maketrans({"O": "0", "I": "1", "L": "1"})

Cart = dict[str, int]


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    description: str
    # Minor units per currency: a price is set for each market, never converted.
    prices: Mapping[str, int]

    def price(self, currency: str) -> int:
        return self.prices[currency]


CATALOG: tuple[Product, ...] = (
    Product(
        "mug",
        "Enamel mug",
        "A camp mug that survives being dropped.",
        {
            "USD": 1800,
            "GBP": 1500,
            "EUR": 1700,
            "JPY": 2600,
            "CAD": 2400,
            "AUD": 2700,
            "INR": 149900,
        },
    ),
    Product(
        "notebook",
        "Dot-grid notebook",
        "A5, 160 pages, lies flat.",
        {
            "USD": 1250,
            "GBP": 1000,
            "EUR": 1150,
            "JPY": 1800,
            "CAD": 1650,
            "AUD": 1900,
            "INR": 99900,
        },
    ),
    Product(
        "tote",
        "Canvas tote bag",
        "Heavy cotton, long handles, one inner pocket.",
        {
            "USD": 2200,
            "GBP": 1800,
            "EUR": 2000,
            "JPY": 3200,
            "CAD": 2900,
            "AUD": 3300,
            "INR": 179900,
        },
    ),
    Product(
        "poster",
        "Screen-printed poster",
        "50 × 70 cm, printed by hand in three colours.",
        {
            "USD": 3000,
            "GBP": 2500,
            "EUR": 2800,
            "JPY": 4500,
            "CAD": 3900,
            "AUD": 4500,
            "INR": 249900,
        },
    ),
    Product(
        "pencils",
        "Pencil set",
        "Six graphite pencils, HB to 6B.",
        {"USD": 800, "GBP": 650, "EUR": 750, "JPY": 1100, "CAD": 1050, "AUD": 1200, "INR": 59900},
    ),
)
PRODUCTS: dict[str, Product] = {product.id: product for product in CATALOG}


def _check_catalog() -> None:
    """Every product has a positive whole price in every currency the store sells in;
    a gap would show up as a crash at checkout, so it fails at import instead."""
    for product in CATALOG:
        if set(product.prices) != set(CURRENCY_EXPONENTS):
            raise RuntimeError(f"{product.id} is not priced in every currency")
        for currency, price in product.prices.items():
            if type(price) is not int or price <= 0:
                raise RuntimeError(f"{product.id} has no valid {currency} price")


_check_catalog()


@dataclass(frozen=True)
class Line:
    product_id: str
    name: str
    quantity: int
    unit_price: int
    amount: int


@dataclass(frozen=True)
class PricedCart:
    currency: str
    lines: tuple[Line, ...]
    total: int

    @property
    def is_empty(self) -> bool:
        return not self.lines


def find_product(product_id: str) -> Product:
    product = PRODUCTS.get(product_id)
    if product is None:
        raise validation_error(
            "This product is not in the store. Choose one from the list.", "product"
        )
    return product


def parse_quantity(text: str) -> int:
    """A quantity typed or sent in a form: ASCII digits from 1 to QUANTITY_MAX."""
    stripped = text.strip()
    if (
        not stripped
        or len(stripped) > QUANTITY_INPUT_LENGTH_MAX
        or not (stripped.isascii() and stripped.isdigit())
        or not 1 <= int(stripped) <= QUANTITY_MAX
    ):
        raise validation_error(f"Choose a quantity from 1 to {QUANTITY_MAX}.", "quantity")
    return int(stripped)


def add_to_cart(cart: Mapping[str, int], product_id: str, quantity: int) -> Cart:
    """The cart with `quantity` more of a product; refused past QUANTITY_MAX of one."""
    product = find_product(product_id)
    if not 1 <= quantity <= QUANTITY_MAX:
        raise validation_error(f"Choose a quantity from 1 to {QUANTITY_MAX}.", "quantity")
    already = cart.get(product.id, 0)
    if already + quantity > QUANTITY_MAX:
        raise validation_error(
            f"You can have at most {QUANTITY_MAX} of each product in your cart, and you "
            f"already have {already} × {product.name}.",
            "quantity",
        )
    return {**cart, product.id: already + quantity}


def remove_from_cart(cart: Mapping[str, int], product_id: str) -> Cart:
    product = find_product(product_id)
    return {key: quantity for key, quantity in cart.items() if key != product.id}


def clean_cart(cart: Mapping[str, int]) -> Cart:
    """Only known products with quantities in bounds, in catalog order: what a cart
    read back from a browser may hold, whatever was sent."""
    return {
        product.id: cart[product.id]
        for product in CATALOG
        if type(cart.get(product.id)) is int and 1 <= cart[product.id] <= QUANTITY_MAX
    }


def item_count(cart: Mapping[str, int]) -> int:
    return sum(clean_cart(cart).values())


def price_cart(cart: Mapping[str, int], currency: str) -> PricedCart:
    lines = []
    for product_id, quantity in clean_cart(cart).items():
        product = PRODUCTS[product_id]
        unit_price = product.price(currency)
        lines.append(Line(product.id, product.name, quantity, unit_price, unit_price * quantity))
    return PricedCart(currency, tuple(lines), sum(line.amount for line in lines))


# --- orders -------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    id: int
    order_id: str
    number: str
    customer_id: int
    payment_id: int
    currency: str
    amount: int
    lines: tuple[Line, ...]
    created_at: datetime


@dataclass(frozen=True)
class OrderSummary:
    """An order in a list: enough to say how it stands, without its refunds."""

    order: Order
    status: PaymentStatus
    refunded: int
    refundable: int


@dataclass(frozen=True)
class OrderDetail:
    order: Order
    payment: Payment
    refunded_to_balance: int
    refunded_to_test_card: int

    @property
    def refundable(self) -> int:
        return self.payment.captured_amount - self.payment.refunded_amount


@dataclass(frozen=True)
class CheckoutResult:
    order: Order
    # True when this order id had been placed already: the page was sent twice, and
    # nothing was paid this time.
    already_placed: bool


def new_order_id() -> str:
    return ORDER_ID_PREFIX + secrets.token_hex(16)


def is_order_id(text: str) -> bool:
    return _ORDER_ID.fullmatch(text) is not None


def new_order_number() -> str:
    digits = "".join(secrets.choice(ORDER_NUMBER_ALPHABET) for _ in range(ORDER_NUMBER_LENGTH))
    return f"GC-{digits[:4]}-{digits[4:]}"


def order_number(text: str) -> str | None:
    """An order number as a shopper may write it (`gc-7k4q-2m`, `GC 7K4Q 2M`, an O for
    a zero) in its one written form; None when it cannot be one."""
    if len(text) > ORDER_NUMBER_INPUT_LENGTH_MAX or not text.isascii():
        return None
    compact = "".join(text.upper().split()).replace("-", "")
    if not compact.startswith("GC"):
        return None
    digits = compact[2:].translate(_MISREAD)
    number = f"GC-{digits[:4]}-{digits[4:]}"
    return number if _ORDER_NUMBER.fullmatch(number) else None


def _lines_json(lines: tuple[Line, ...]) -> str:
    return json.dumps(
        [
            {
                "product": line.product_id,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "amount": line.amount,
            }
            for line in lines
        ]
    )


def _order_from_row(row: Row[Any]) -> Order:
    items = json.loads(row.items)
    return Order(
        id=row.id,
        order_id=row.order_id,
        number=row.number,
        customer_id=row.customer_id,
        payment_id=row.payment_id,
        currency=row.currency,
        amount=row.amount,
        lines=tuple(
            Line(
                item["product"], item["name"], item["quantity"], item["unit_price"], item["amount"]
            )
            for item in items
        ),
        created_at=row.created_at,
    )


def _order_taken() -> GiftcardError:
    return GiftcardError(
        ErrorCode.INVALID_STATE,
        "This checkout page can no longer be used. Open the checkout again to place your order.",
        param="order_id",
    )


async def place_order(
    db: Database,
    customer: Customer,
    order_id: str,
    cart: PricedCart,
    use_balance: UseBalance,
    *,
    hold_ttl_s: int,
    actor: str,
    clock: Clock,
) -> CheckoutResult:
    """Pay for a cart and record the order, in one transaction. An order id this
    customer already placed is not paid again: its order is returned instead."""
    if not is_order_id(order_id):
        raise _order_taken()
    if cart.is_empty:
        raise validation_error("The cart is empty.", "cart")
    if cart.currency != customer.currency:
        raise validation_error(f"This account pays in {customer.currency}.", "currency")
    placed = await order_of(db, customer.id, order_id)
    if placed is not None:
        return CheckoutResult(placed, already_placed=True)
    if sum(line.amount for line in cart.lines) != cart.total:
        raise RuntimeError("a cart's lines do not add up to its total")

    async def work(connection: AsyncConnection) -> Order:
        payment = await payments.pay(
            connection,
            PaymentRequest(
                customer_id=customer.id,
                order_id=order_id,
                amount=cart.total,
                currency=cart.currency,
                use_balance=use_balance,
                capture=True,
            ),
            hold_ttl_s=hold_ttl_s,
            actor=actor,
            now=clock.now(),
        )
        number = await _free_order_number(connection)
        try:
            row = (
                await connection.execute(
                    insert(store_orders)
                    .values(
                        order_id=order_id,
                        number=number,
                        customer_id=customer.id,
                        payment_id=payment.id,
                        currency=cart.currency,
                        amount=cart.total,
                        items=_lines_json(cart.lines),
                        created_at=payment.created_at,
                    )
                    .returning(*store_orders.c)
                )
            ).one()
        except IntegrityError as error:
            # Another customer's order has this id: refused, and the payment made in
            # this transaction is rolled back with it.
            if is_unique_violation(error):
                raise _order_taken() from None
            raise
        return _order_from_row(row)

    try:
        order = await UnitOfWork(db, clock).run(work)
    except GiftcardError as error:
        # The same page sent twice at once: the other submission paid, and this one
        # met its payment. Show the order it made.
        if error.code is ErrorCode.INVALID_STATE and error.param == "order_id":
            placed = await order_of(db, customer.id, order_id)
            if placed is not None:
                return CheckoutResult(placed, already_placed=True)
            raise _order_taken() from None
        raise
    return CheckoutResult(order, already_placed=False)


async def _free_order_number(connection: AsyncConnection) -> str:
    """A new order number no order has. With a billion of them a second draw is rare, and
    the unique constraint still stands behind this look-up."""
    for _ in range(ORDER_NUMBER_ATTEMPTS_MAX):
        number = new_order_number()
        taken = (
            await connection.execute(
                select(store_orders.c.id).where(store_orders.c.number == number)
            )
        ).one_or_none()
        if taken is None:
            return number
    raise RuntimeError("no free order number after several draws")


async def order_of(db: Database, customer_id: int, reference: str) -> Order | None:
    """The customer's order with this number (or the checkout's own order id); None for
    another customer's, an unknown one, or text that is neither."""
    number = order_number(reference)
    if number is not None:
        where = store_orders.c.number == number
    elif is_order_id(reference):
        where = store_orders.c.order_id == reference
    else:
        return None
    async with db.transaction(write=False) as connection:
        row = (
            await connection.execute(
                select(store_orders).where(where, store_orders.c.customer_id == customer_id)
            )
        ).one_or_none()
    return None if row is None else _order_from_row(row)


async def order_detail(db: Database, customer_id: int, reference: str) -> OrderDetail | None:
    order = await order_of(db, customer_id, reference)
    if order is None:
        return None
    payment = await payments.get(db, order.payment_id)
    if payment.customer_id != customer_id or payment.amount != order.amount:
        raise RuntimeError(f"order {order.id} does not match its payment")
    return OrderDetail(
        order,
        payment,
        refunded_to_balance=payment.refunded_to_gift_card_balance,
        refunded_to_test_card=payment.refunded_to_original_payment_method,
    )


async def orders_of(
    db: Database, customer_id: int, *, limit: int = ORDERS_SHOWN_MAX
) -> list[OrderSummary]:
    """The customer's latest orders, newest first."""
    limit = max(1, min(limit, ORDERS_SHOWN_MAX))
    async with db.transaction(write=False) as connection:
        rows = (
            await connection.execute(
                select(
                    store_orders,
                    payments_table.c.status,
                    payments_table.c.captured_amount,
                    payments_table.c.refunded_amount,
                )
                .join(payments_table, payments_table.c.id == store_orders.c.payment_id)
                .where(store_orders.c.customer_id == customer_id)
                .order_by(store_orders.c.id.desc())
                .limit(limit)
            )
        ).all()
    return [
        OrderSummary(
            _order_from_row(row),
            PaymentStatus(row.status),
            refunded=row.refunded_amount,
            refundable=row.captured_amount - row.refunded_amount,
        )
        for row in rows
    ]


class NothingToRefund(GiftcardError):
    """Everything the order's payment captured was refunded already."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.INVALID_STATE, "This order has been refunded in full already.")


@dataclass(frozen=True)
class RefundSplit:
    """Where a refund of `amount` will go, as `payments.refund` will split it."""

    amount: int
    to_gift_card_balance: int
    to_test_card: int


def refund_split(detail: OrderDetail, amount: int, preference: RefundPreference) -> RefundSplit:
    """What the balance paid and has not had back yet goes back to it first; the rest
    follows the refund preference (the test card, or the balance as store credit)."""
    payment = detail.payment
    balance_part = min(
        amount, payment.captured_gift_card_amount - payment.refunded_gift_card_amount
    )
    card_part = amount - balance_part
    if preference is RefundPreference.GIFT_CARD_BALANCE:
        return RefundSplit(amount, amount, 0)
    return RefundSplit(amount, balance_part, card_part)


def check_refund_amount(detail: OrderDetail, amount: int, money: str) -> None:
    """Refused beside the amount field when more than the order still has to refund;
    `money` is that rest as the shopper's store writes it."""
    if amount > detail.refundable:
        raise validation_error(
            f"That is more than the {money} this order can still refund.", "amount"
        )


async def refund_order(
    db: Database,
    customer_id: int,
    reference: str,
    *,
    amount: int | None = None,
    actor: str,
    clock: Clock,
) -> Refund:
    """Refund `amount` of the customer's order, or all that is still refundable. The
    payment decides the split: the balance's part back to the balance, the rest by the
    customer's refund preference."""
    detail = await order_detail(db, customer_id, reference)
    if detail is None:
        raise GiftcardError(ErrorCode.NOT_FOUND, "There is no order with this number.")
    if detail.refundable <= 0:
        raise NothingToRefund
    try:
        return await payments.refund(
            UnitOfWork(db, clock),
            detail.payment.id,
            amount=detail.refundable if amount is None else amount,
            actor=actor,
        )
    except GiftcardError as error:
        # A refund sent at the same moment took it first.
        if error.code is ErrorCode.INVALID_STATE:
            again = await order_detail(db, customer_id, reference)
            if again is not None and again.refundable <= 0:
                raise NothingToRefund from None
        raise
