"""The demo store's pages: products, the cart, checkout, and the shopper's orders.

Mounted only when GIFTCARD_DEMO_STORE is on (see `giftcard.web.install`): its test card
is pretend money, so a real deployment has no page that takes it.

The cart is a cookie of product ids and quantities (`mug:2|tote:1`), read defensively:
anything unknown or out of bounds in it is dropped, and prices always come from the
catalog. Checkout and refunds call the store's use cases in `giftcard.demo.store`, which
pay through the same payment use cases as the API.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from giftcard import redemption
from giftcard.customers import CustomerPrincipal, RefundPreference
from giftcard.demo import gift_pages, store
from giftcard.demo.layout import (
    CART_COOKIE,
    CART_COOKIE_TTL_S,
    STORE_PAGE,
    read_cart,
    store_page,
)
from giftcard.errors import ErrorCode, GiftcardError, validation_error
from giftcard.http import services
from giftcard.money import (
    AMOUNT_INPUT_LENGTH_MAX,
    REGIONS,
    example_amount,
    parse_amount,
)
from giftcard.payments import PaymentStatus, Refund, UseBalance
from giftcard.web import security
from giftcard.web.security import checked_form, current_shopper, require_shopper, text_field
from giftcard.web.templating import money_for, redirect

router = APIRouter(include_in_schema=False)
router.include_router(gift_pages.router)

CART_PAGE = "/store/cart"
CHECKOUT_PAGE = "/store/checkout"
ORDERS_PAGE = "/store/orders"
PRODUCT_INPUT_LENGTH_MAX = 40
ORDER_ID_INPUT_LENGTH_MAX = 64
# Logged-out visitors see the prices of this store.
DEFAULT_REGION = "US"

USE_BALANCE_CHOICES = ("max", "amount", "none")

Money = Callable[[int, str], str]

REFUND_DESTINATION = {
    RefundPreference.GIFT_CARD_BALANCE: "your gift card balance",
    RefundPreference.ORIGINAL_PAYMENT_METHOD: "the test card",
}


def _region(shopper: CustomerPrincipal | None) -> str:
    return shopper.customer.region if shopper is not None else DEFAULT_REGION


def _currency(shopper: CustomerPrincipal | None) -> str:
    return REGIONS[_region(shopper)].currency


# --- the cart cookie ----------------------------------------------------------------


def _write_cart(request: Request, response: Response, cart: store.Cart) -> None:
    cleaned = store.clean_cart(cart)
    if not cleaned:
        security.clear_cookie(request, response, CART_COOKIE)
        return
    value = "|".join(f"{product_id}:{quantity}" for product_id, quantity in cleaned.items())
    security.set_cookie(request, response, CART_COOKIE, value, max_age_s=CART_COOKIE_TTL_S)


# --- products and the cart ----------------------------------------------------------


async def _products_page(
    request: Request, *, problem: str | None = None, status: int = 200
) -> Response:
    shopper = await current_shopper(request)
    currency = _currency(shopper)
    cart = read_cart(request)
    balance = None
    if shopper is not None:
        balance = await redemption.balance(services(request).db, shopper.customer)
    return store_page(
        request,
        "store.html",
        "products",
        {
            "currency": currency,
            "products": [
                {
                    "id": product.id,
                    "name": product.name,
                    "description": product.description,
                    "price": product.price(currency),
                    "in_cart": cart.get(product.id, 0),
                }
                for product in store.CATALOG
            ],
            "balance": balance,
            "problem": problem,
        },
        status=status,
    )


@router.get(STORE_PAGE, response_class=HTMLResponse)
async def products(request: Request) -> Response:
    return await _products_page(request)


@router.post(CART_PAGE, response_class=HTMLResponse)
async def add_to_cart(request: Request) -> Response:
    form = await checked_form(request)
    product_id = text_field(form, "product", length_max=PRODUCT_INPUT_LENGTH_MAX)
    quantity_text = text_field(form, "quantity", length_max=store.QUANTITY_INPUT_LENGTH_MAX + 1)
    try:
        quantity = store.parse_quantity(quantity_text or "1")
        cart = store.add_to_cart(read_cart(request), product_id, quantity)
    except GiftcardError as error:
        return await _products_page(request, problem=error.detail, status=error.status)
    product = store.PRODUCTS[product_id]
    count = store.item_count(cart)
    # Back to the product the shopper was looking at, not the top of a long page.
    response = redirect(
        request,
        f"{STORE_PAGE}#product-{product.id}",
        flash={
            "level": "success",
            "title": f"{product.name} is in your cart.",
            "text": f"Your cart holds {count} {'item' if count == 1 else 'items'}.",
        },
    )
    _write_cart(request, response, cart)
    return response


async def _cart_page(
    request: Request, *, problem: str | None = None, status: int = 200
) -> Response:
    shopper = await current_shopper(request)
    priced = store.price_cart(read_cart(request), _currency(shopper))
    return store_page(
        request, "store_cart.html", "cart", {"cart": priced, "problem": problem}, status=status
    )


@router.get(CART_PAGE, response_class=HTMLResponse)
async def cart(request: Request) -> Response:
    return await _cart_page(request)


@router.post(CART_PAGE + "/remove", response_class=HTMLResponse)
async def remove_from_cart(request: Request) -> Response:
    form = await checked_form(request)
    product_id = text_field(form, "product", length_max=PRODUCT_INPUT_LENGTH_MAX)
    current = read_cart(request)
    try:
        cart = store.remove_from_cart(current, product_id)
    except GiftcardError as error:
        return await _cart_page(request, problem=error.detail, status=error.status)
    name = store.PRODUCTS[product_id].name
    if product_id not in current:
        flash = {"level": "info", "title": f"{name} was not in your cart.", "text": ""}
    else:
        flash = {"level": "success", "title": f"{name} is out of your cart.", "text": ""}
    response = redirect(request, CART_PAGE, flash=flash)
    _write_cart(request, response, cart)
    return response


# --- checkout -----------------------------------------------------------------------


async def _checkout_page(
    request: Request,
    shopper: CustomerPrincipal,
    priced: store.PricedCart,
    order_id: str,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
    status: int = 200,
) -> Response:
    balance = await redemption.balance(services(request).db, shopper.customer)
    max_use = min(balance.available, priced.total)
    shown = {"use_balance": "max", **(values or {})}
    from_balance = _balance_part(shown, priced, max_use, shopper.customer.region)
    return store_page(
        request,
        "store_checkout.html",
        "checkout",
        {
            "cart": priced,
            "balance": balance,
            "max_use": max_use,
            "example_amount": example_amount(shopper.customer.region, up_to=max_use),
            "order_id": order_id,
            "values": shown,
            "from_balance": from_balance,
            "locale": REGIONS[shopper.customer.region].locale.replace("_", "-"),
            "errors": errors or {},
            "problem": problem,
        },
        status=status,
    )


@router.get(CHECKOUT_PAGE, response_class=HTMLResponse)
async def checkout_form(request: Request) -> Response:
    shopper = await require_shopper(request)
    priced = store.price_cart(read_cart(request), shopper.customer.currency)
    if priced.is_empty:
        return _empty_cart(request)
    return await _checkout_page(request, shopper, priced, store.new_order_id())


def _empty_cart(request: Request) -> Response:
    return redirect(
        request,
        CART_PAGE,
        flash={
            "level": "info",
            "title": "Your cart is empty.",
            "text": "Add something from the store, then check out.",
        },
    )


def _balance_part(
    values: dict[str, str], priced: store.PricedCart, max_use: int, region: str
) -> int | None:
    """What the balance would pay with these choices, for the order summary; None while
    a chosen amount is not one that checkout would take."""
    if values.get("use_balance") == "none":
        return 0
    if values.get("use_balance") != "amount":
        return max_use
    try:
        amount = parse_amount(values.get("use_balance_amount", ""), region)
    except GiftcardError:
        return None
    return amount if amount <= max_use else None


def _use_balance(
    form: FormData,
    priced: store.PricedCart,
    available: int,
    region: str,
    money: Callable[[int, str], str],
) -> UseBalance:
    """What the shopper chose to pay from their balance, a chosen amount read as the
    shopper's store writes money; refused with the field to fix."""
    choice = text_field(form, "use_balance", length_max=10)
    if choice == "max":
        return "max"
    if choice == "none":
        return "none"
    if choice != "amount":
        raise validation_error("Choose how much of your gift card balance to use.", "use_balance")
    text = text_field(form, "use_balance_amount", length_max=AMOUNT_INPUT_LENGTH_MAX + 1)
    if not text.strip():
        raise validation_error(
            "Enter the amount to use from your gift card balance.", "use_balance_amount"
        )
    amount = parse_amount(text, region, param="use_balance_amount")
    if amount > available:
        raise validation_error(
            f"That is more than your gift card balance of {money(available, priced.currency)}.",
            "use_balance_amount",
        )
    if amount > priced.total:
        raise validation_error(
            f"That is more than the order total of {money(priced.total, priced.currency)}.",
            "use_balance_amount",
        )
    return amount


@router.post(CHECKOUT_PAGE, response_class=HTMLResponse)
async def place_order(request: Request) -> Response:
    form = await checked_form(request)
    shopper = await require_shopper(request)
    svc = services(request)
    order_id = text_field(form, "order_id", length_max=ORDER_ID_INPUT_LENGTH_MAX)
    if not store.is_order_id(order_id):
        return redirect(
            request,
            CHECKOUT_PAGE,
            flash={
                "level": "error",
                "title": "This checkout form was incomplete. Nothing was paid.",
                "text": "Check your order below and place it again.",
            },
        )
    # A form sent again after it worked (reload, back button, double click) finds its
    # order even though the cart was emptied by the first.
    placed = await store.order_of(svc.db, shopper.customer.id, order_id)
    if placed is not None:
        return _to_order(request, placed.number, already_placed=True)
    priced = store.price_cart(read_cart(request), shopper.customer.currency)
    if priced.is_empty:
        return _empty_cart(request)
    values = {
        "use_balance": text_field(form, "use_balance", length_max=10),
        "use_balance_amount": text_field(
            form, "use_balance_amount", length_max=AMOUNT_INPUT_LENGTH_MAX + 1
        ),
    }
    if text_field(form, "total", length_max=20) != str(priced.total):
        return await _checkout_page(
            request,
            shopper,
            priced,
            order_id,
            values=values,
            problem="Your cart changed since this page was opened, so nothing was paid. "
            "Check the order and its total, then place it again.",
            status=409,
        )
    balance = await redemption.balance(svc.db, shopper.customer)
    recalculate = text_field(form, "action", length_max=20) == "recalculate"
    try:
        use_balance = _use_balance(
            form, priced, balance.available, shopper.customer.region, money_for(shopper)
        )
        if recalculate:
            # Without JavaScript, the summary's split is shown again for the new choice;
            # nothing is paid until Place order.
            return await _checkout_page(request, shopper, priced, order_id, values=values)
        result = await store.place_order(
            svc.db,
            shopper.customer,
            order_id,
            priced,
            use_balance,
            hold_ttl_s=svc.settings.hold_ttl_s,
            actor=shopper.actor,
            clock=svc.clock,
        )
    except GiftcardError as error:
        field = error.param if error.param in ("use_balance", "use_balance_amount") else None
        # An order id refused as taken was not paid with: the form gets a fresh one.
        if error.param == "order_id":
            order_id = store.new_order_id()
        return await _checkout_page(
            request,
            shopper,
            priced,
            order_id,
            values=values,
            errors={field: error.detail} if field else None,
            problem=None if field else error.detail,
            status=error.status,
        )
    response = _to_order(request, result.order.number, already_placed=result.already_placed)
    security.clear_cookie(request, response, CART_COOKIE)
    return response


def _to_order(request: Request, number: str, *, already_placed: bool) -> Response:
    if already_placed:
        flash = {
            "level": "info",
            "title": "This order was placed already.",
            "text": "The checkout form was sent more than once; the order was paid once.",
            "placed": True,
        }
    else:
        flash = {
            "level": "success",
            "title": "Your order is placed and paid.",
            "text": "",
            "placed": True,
        }
    return redirect(request, f"{ORDERS_PAGE}/{number}", flash=flash)


# --- orders -------------------------------------------------------------------------


def status_words(status: PaymentStatus, refunded: int) -> str:
    if status is PaymentStatus.REFUNDED:
        return "Refunded"
    if status is PaymentStatus.CAPTURED:
        return "Partly refunded" if refunded else "Paid"
    if status is PaymentStatus.AUTHORIZED:
        return "Awaiting payment"
    return "Cancelled"


@router.get(ORDERS_PAGE, response_class=HTMLResponse)
async def orders(request: Request) -> Response:
    shopper = await require_shopper(request)
    found = await store.orders_of(services(request).db, shopper.customer.id)
    return store_page(
        request,
        "store_orders.html",
        "orders",
        {
            "orders": found,
            "orders_max": store.ORDERS_SHOWN_MAX,
            "status_words": status_words,
        },
    )


def _no_such_order() -> GiftcardError:
    return GiftcardError(
        ErrorCode.NOT_FOUND,
        "There is no order with this number in your account. Your orders are listed "
        "under Your orders in the store.",
    )


async def _detail(
    request: Request, shopper: CustomerPrincipal, reference: str
) -> store.OrderDetail:
    detail = await store.order_detail(services(request).db, shopper.customer.id, reference)
    if detail is None:
        raise _no_such_order()
    return detail


@router.get(ORDERS_PAGE + "/{order_id}", response_class=HTMLResponse)
async def order(request: Request, order_id: str) -> Response:
    shopper = await require_shopper(request)
    detail = await _detail(request, shopper, order_id)
    if order_id != detail.order.number:
        # One address per order: the number as it is written.
        return redirect(request, f"{ORDERS_PAGE}/{detail.order.number}")
    flash = security.take_flash(request)
    return store_page(
        request,
        "store_order.html",
        "orders",
        {
            "detail": detail,
            "placed": bool(flash and flash.get("placed")),
            "status": status_words(detail.payment.status, detail.payment.refunded_amount),
            "refund_destination": REFUND_DESTINATION[shopper.customer.refund_preference],
        },
    )


# --- refunds ------------------------------------------------------------------------


def _refund_page(
    request: Request,
    shopper: CustomerPrincipal,
    detail: store.OrderDetail,
    *,
    amount_text: str,
    split: store.RefundSplit | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    """The refund step of an order: the amount to refund, then (with `split`) what the
    shopper is asked to confirm."""
    return store_page(
        request,
        "store_refund.html",
        "orders",
        {
            "detail": detail,
            "split": split,
            "values": {"amount": amount_text},
            "errors": errors or {},
            "example_amount": example_amount(shopper.customer.region, up_to=detail.refundable),
            "refund_destination": REFUND_DESTINATION[shopper.customer.refund_preference],
        },
        status=status,
    )


def _nothing_to_refund(request: Request, number: str) -> Response:
    return redirect(
        request,
        f"{ORDERS_PAGE}/{number}",
        flash={
            "level": "info",
            "title": store.NothingToRefund().detail,
            "text": "Nothing more was refunded.",
        },
    )


@router.get(ORDERS_PAGE + "/{order_id}/refund", response_class=HTMLResponse)
async def refund_form(request: Request, order_id: str) -> Response:
    shopper = await require_shopper(request)
    detail = await _detail(request, shopper, order_id)
    if detail.refundable <= 0:
        return _nothing_to_refund(request, detail.order.number)
    return _refund_page(
        request,
        shopper,
        detail,
        amount_text=money_for(shopper)(detail.refundable, detail.order.currency),
    )


def _refund_amount(form: FormData, detail: store.OrderDetail, region: str, money: Money) -> int:
    """The amount to refund, read as the shopper's store writes money."""
    text = text_field(form, "amount", length_max=AMOUNT_INPUT_LENGTH_MAX + 1)
    if not text.strip():
        raise validation_error("Enter the amount to refund.", "amount")
    amount = parse_amount(text, region, param="amount")
    store.check_refund_amount(detail, amount, money(detail.refundable, detail.order.currency))
    return amount


@router.post(ORDERS_PAGE + "/{order_id}/refund", response_class=HTMLResponse)
async def refund(request: Request, order_id: str) -> Response:
    """Two steps: the amount, then a confirmation of where it goes. Only a form sent
    from the confirmation (`confirm=yes`) refunds anything."""
    form = await checked_form(request)
    shopper = await require_shopper(request)
    svc = services(request)
    detail = await _detail(request, shopper, order_id)
    number = detail.order.number
    if detail.refundable <= 0:
        return _nothing_to_refund(request, number)
    money = money_for(shopper)
    amount_text = text_field(form, "amount", length_max=AMOUNT_INPUT_LENGTH_MAX + 1)
    try:
        amount = _refund_amount(form, detail, shopper.customer.region, money)
    except GiftcardError as error:
        return _refund_page(
            request,
            shopper,
            detail,
            amount_text=amount_text,
            errors={"amount": error.detail},
            status=error.status,
        )
    if text_field(form, "confirm", length_max=10) != "yes":
        split = store.refund_split(detail, amount, shopper.customer.refund_preference)
        return _refund_page(request, shopper, detail, amount_text=amount_text, split=split)
    try:
        made = await store.refund_order(
            svc.db, shopper.customer.id, number, amount=amount, actor=shopper.actor, clock=svc.clock
        )
    except store.NothingToRefund:
        return _nothing_to_refund(request, number)
    except GiftcardError as error:
        if error.code is ErrorCode.NOT_FOUND:
            raise _no_such_order() from None
        if error.code is not ErrorCode.INVALID_STATE:
            raise
        # Another refund of this order went first and left less than this one asks.
        again = await _detail(request, shopper, number)
        return _refund_page(
            request,
            shopper,
            again,
            amount_text=money_for(shopper)(max(again.refundable, 0), again.order.currency),
            errors={
                "amount": "Part of this order was refunded meanwhile. It can still refund "
                f"{money(again.refundable, again.order.currency)}."
            },
            status=409,
        )
    return redirect(
        request,
        f"{ORDERS_PAGE}/{number}",
        flash={"level": "success", "title": refunded_words(made, money), "text": ""},
    )


def refunded_words(made: Refund, money: Money) -> str:
    """The banner after a refund, saying where each part went: `Refunded $12.00: $8.00 to
    your gift card balance, $4.00 to your test card.`"""
    parts = []
    if made.to_gift_card_balance:
        parts.append(f"{money(made.to_gift_card_balance, made.currency)} to your gift card balance")
    if made.to_original_payment_method:
        parts.append(f"{money(made.to_original_payment_method, made.currency)} to your test card")
    return f"Refunded {money(made.amount, made.currency)}: " + ", ".join(parts) + "."
