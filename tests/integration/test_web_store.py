"""The demo store's pages over HTTP, on SQLite and PostgreSQL, with GIFTCARD_DEMO_STORE on
(tests/integration/test_demo_store.py shows they do not exist without it): the catalog in the
shopper's currency, the cart cookie and its bounds, checkout with the gift card balance
(all of it, a chosen amount, none) and the test card for the rest, a checkout sent twice,
refunds split between the balance and the test card, and other shoppers' orders.

Balances are read back through `GET /v1/me/balance` and payments from the database, so
that each test checks what really moved, not only what a page says."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from functools import partial
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from giftcard.config import Settings
from giftcard.db.engine import Database
from giftcard.db.migrate import alembic_config, upgrade
from giftcard.db.tables import payments, refunds, store_orders
from giftcard.demo import store
from giftcard.money import REGIONS, format_minor
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import api_key, issue
from tests.integration.test_verify import run_verify
from tests.web import (
    PASSWORD,
    csrf,
    csrf_of,
    field_error,
    hidden_value,
    text_of,
    web_post,
    web_redeem,
    web_sign_up,
)

DEMO_NOTE = "This is a demo store: nothing is shipped, and the test card is pretend money."
ORDER_NUMBER = r"GC-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{2}"
ORDER_PATH = re.compile(rf"^/store/orders/({ORDER_NUMBER})$")
TEST_CARD_SENTENCE = (
    "Test card 4242 4242 4242 4242 — the rest is charged here. This is a demo: no real money moves."
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Every test here runs against a demo: the store is mounted only then."""
    return replace(settings, demo_store=True)


def usd(amount_minor: int) -> str:
    return format_minor(amount_minor, "USD", "en_US")


def heading(page: str) -> str:
    found = re.search(r"<h1>(.*?)</h1>", page, re.S)
    assert found, "no h1 on the page"
    return text_of(found.group(1))


def flash(page: str) -> str:
    found = re.search(r'<div class="notice[^"]*" role="status">(.*?)</div>', page, re.S)
    return text_of(found.group(1)) if found else ""


def summary(page: str) -> dict[str, str]:
    """The order summary's terms and values."""
    found = re.search(r'<dl class="summary"[^>]*>(.*?)</dl>', page, re.S)
    assert found, "no summary on the page"
    pairs = re.findall(r"<dt>(.*?)</dt>\s*<dd[^>]*>(.*?)</dd>", found.group(1), re.S)
    return {text_of(term): text_of(value) for term, value in pairs}


def checked_choice(page: str) -> str:
    found = re.search(r'<input type="radio"[^>]*name="use_balance" value="(\w+)" checked>', page)
    assert found, "no use_balance choice is checked"
    return found.group(1)


async def shopper_with_balance(
    client: httpx.AsyncClient, services: Services, amount: int, region: str = "US"
) -> str:
    """A shopper logged into the pages, with `amount` redeemed into their balance."""
    email = await web_sign_up(client, region)
    if amount:
        await add_balance(client, services, amount, region)
    return email


async def add_balance(
    client: httpx.AsyncClient, services: Services, amount: int, region: str = "US"
) -> None:
    [card] = await issue(client, await api_key(services), amount=amount, region=region)
    redeemed = await web_redeem(client, card["code"])
    assert redeemed.status_code == 303, redeemed.text


async def balance_of(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    session = await client.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    assert session.status_code == 201, session.text
    auth = {"Authorization": f"Bearer {session.json()['token']}"}
    balance = await client.get("/v1/me/balance", headers=auth)
    assert balance.status_code == 200, balance.text
    found: dict[str, Any] = balance.json()
    return found


async def add(client: httpx.AsyncClient, product: str, quantity: str | None = None) -> None:
    data = {"product": product} if quantity is None else {"product": product, "quantity": quantity}
    response = await web_post(client, "/store/cart", data)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"/store#product-{product}"


async def open_checkout(client: httpx.AsyncClient) -> str:
    page = await client.get("/store/checkout")
    assert page.status_code == 200, page.text
    return page.text


async def place(
    client: httpx.AsyncClient, page: str, use_balance: str = "max", amount: str = "", **extra: str
) -> httpx.Response:
    """Send the checkout form shown on `page`, as the browser would."""
    data = {
        "csrf_token": csrf_of(page),
        "order_id": hidden_value(page, "order_id"),
        "total": hidden_value(page, "total"),
        "use_balance": use_balance,
        "use_balance_amount": amount,
        **extra,
    }
    return await client.post("/store/checkout", data=data)


async def follow(client: httpx.AsyncClient, response: httpx.Response) -> httpx.Response:
    assert response.status_code == 303, response.text
    page = await client.get(response.headers["location"])
    assert page.status_code == 200, page.text
    return page


async def checkout(
    client: httpx.AsyncClient, use_balance: str = "max", amount: str = ""
) -> tuple[str, str]:
    """Check the cart out; returns the order's id and its page right after."""
    placed = await place(client, await open_checkout(client), use_balance, amount)
    assert placed.status_code == 303, placed.text
    found = ORDER_PATH.match(placed.headers["location"])
    assert found, placed.headers["location"]
    return found.group(1), (await follow(client, placed)).text


async def count_rows(services: Services, table: Any, *where: Any) -> int:
    async with services.db.transaction(write=False) as connection:
        return int(
            (
                await connection.execute(select(func.count()).select_from(table).where(*where))
            ).scalar_one()
        )


async def payment_of(services: Services, number: str) -> Any:
    """The payment of the order with this number."""
    async with services.db.transaction(write=False) as connection:
        return (
            await connection.execute(
                select(payments)
                .join(store_orders, store_orders.c.payment_id == payments.c.id)
                .where(store_orders.c.number == number)
            )
        ).one()


async def refund(
    client: httpx.AsyncClient, number: str, amount: str | None = None
) -> httpx.Response:
    """Request a refund as a shopper would: open the refund step, send the amount it
    offers (or `amount`), then confirm what the confirmation shows."""
    step = await client.get(f"/store/orders/{number}/refund")
    assert step.status_code == 200, step.text
    offered = hidden_value(step.text, "amount")
    review = await client.post(
        f"/store/orders/{number}/refund",
        data={"csrf_token": csrf_of(step.text), "amount": offered if amount is None else amount},
    )
    assert review.status_code == 200, review.text
    assert heading(review.text) == "Confirm your refund"
    return await client.post(
        f"/store/orders/{number}/refund",
        data={
            "csrf_token": csrf_of(review.text),
            "amount": hidden_value(review.text, "amount"),
            "confirm": hidden_value(review.text, "confirm"),
        },
    )


def set_cart_cookie(client: httpx.AsyncClient, value: str) -> None:
    """What a browser could send whatever the server set: here, a hand-made cart."""
    client.cookies.delete("giftcard_cart")
    client.cookies.set("giftcard_cart", value, domain="testserver.local", path="/")


# --- the catalog and the cart ----------------------------------------------------------


async def test_store_shows_every_product_priced_for_the_shoppers_store(
    client: httpx.AsyncClient,
) -> None:
    """A visitor sees US prices and a form to add each product; a shopper of the Japan
    store sees yen, whole, and a link to their orders."""
    visitor = await client.get("/store")

    assert visitor.status_code == 200
    assert heading(visitor.text) == "Demo store"
    products = re.search(r'<ul class="products">(.*?)</ul>', visitor.text, re.S)
    assert products
    items = re.findall(r"<li>(.*?)</li>", products.group(1), re.S)
    assert len(items) == len(store.CATALOG) >= 4
    for item, product in zip(items, store.CATALOG, strict=True):
        assert f">{product.name}</h2>" in item
        assert f'<p class="price">{usd(product.price("USD"))}</p>' in item
        assert 'action="/store/cart"' in item
        assert f'name="product" value="{product.id}"' in item
        assert ">Add to cart</button>" in item
    assert 'href="/store/cart">Cart (0)</a>' in visitor.text
    assert "/store/orders" not in visitor.text

    await web_sign_up(client, "JP")
    shopper = await client.get("/store")

    assert '<p class="price">¥2,600</p>' in shopper.text
    assert '<p class="price">¥1,800</p>' in shopper.text
    assert 'href="/store/orders">Your orders</a>' in shopper.text


async def test_cart_holds_ids_and_quantities_and_prices_them_on_the_server(
    client: httpx.AsyncClient,
) -> None:
    """Adding twice counts two; the cart page prices each line and the total; the
    cookie holds no price; Remove takes a line out; an empty cart says so."""
    await add(client, "mug")
    await add(client, "mug")
    await add(client, "poster")

    cart = await client.get("/store/cart")

    assert client.cookies["giftcard_cart"] == "mug:2|poster:1"
    assert 'href="/store/cart" aria-current="page">Cart (3)</a>' in cart.text
    words = text_of(cart.text)
    assert f"Enamel mug Quantity 2 × {usd(1800)} {usd(3600)}" in words
    assert f"Screen-printed poster Quantity 1 × {usd(3000)} {usd(3000)}" in words
    assert f"Total {usd(6600)}" in words
    assert '<a class="button" href="/store/checkout">Checkout</a>' in cart.text
    assert cart.text.count(">Remove</button>") == 2

    removed = await web_post(client, "/store/cart/remove", {"product": "mug"})
    after = await follow(client, removed)

    assert "Cart (1)" in after.text
    assert f"Total {usd(3000)}" in text_of(after.text)
    assert flash(after.text) == "Enamel mug is out of your cart."

    await web_post(client, "/store/cart/remove", {"product": "poster"})
    empty = await client.get("/store/cart")

    assert "Your cart is empty." in empty.text
    assert 'href="/store">Back to the store</a>' in empty.text
    assert "giftcard_cart" not in client.cookies

    again = await follow(client, await web_post(client, "/store/cart/remove", {"product": "mug"}))
    assert flash(again.text) == "Enamel mug was not in your cart."


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"product": "hat"}, "This product is not in the store."),
        ({"product": ""}, "This product is not in the store."),
        ({"product": "mug" * 100}, "This product is not in the store."),
        ({"product": "mug", "quantity": "0"}, "Choose a quantity from 1 to 10."),
        ({"product": "mug", "quantity": "11"}, "Choose a quantity from 1 to 10."),
        ({"product": "mug", "quantity": "-1"}, "Choose a quantity from 1 to 10."),
        ({"product": "mug", "quantity": "1.5"}, "Choose a quantity from 1 to 10."),
        ({"product": "mug", "quantity": "abc"}, "Choose a quantity from 1 to 10."),
        ({"product": "mug", "quantity": "٣"}, "Choose a quantity from 1 to 10."),
        ({"product": "mug", "quantity": "9" * 50}, "Choose a quantity from 1 to 10."),
        ({"product": "mug", "quantity": "10"}, "at most 10 of each product"),
    ],
)
async def test_cart_refuses_bad_input_and_keeps_what_it_had(
    client: httpx.AsyncClient, data: dict[str, str], message: str
) -> None:
    """An unknown product or a quantity outside 1..10 (or one that would take a line
    past 10) is refused on the store page with a clear message; the cart is unchanged."""
    await add(client, "mug")

    refused = await web_post(client, "/store/cart", data)

    assert refused.status_code == 422, refused.text
    assert heading(refused.text) == "Demo store"
    assert message in text_of(refused.text)
    assert "set-cookie" not in refused.headers or "giftcard_cart" not in refused.headers.get(
        "set-cookie", ""
    )
    assert client.cookies["giftcard_cart"] == "mug:1"


async def test_cart_bounds_hold_at_the_edge_and_against_a_forged_cookie(
    client: httpx.AsyncClient,
) -> None:
    """Ten of one product is allowed and the eleventh is not; Remove of an unknown product
    is refused; a cart cookie written by hand keeps only known products in bounds; a form
    without its CSRF token changes nothing."""
    await add(client, "mug", "9")
    await add(client, "mug")
    assert client.cookies["giftcard_cart"] == "mug:10"
    eleventh = await web_post(client, "/store/cart", {"product": "mug"})
    assert eleventh.status_code == 422
    assert "you already have 10 × Enamel mug" in text_of(eleventh.text)

    unknown = await web_post(client, "/store/cart/remove", {"product": "hat"})
    assert unknown.status_code == 422
    assert "This product is not in the store." in text_of(unknown.text)

    for forged in ({"product": "tote"}, {"product": "tote", "csrf_token": "forged"}):
        refused = await client.post("/store/cart", data=forged)
        assert refused.status_code == 403
        assert heading(refused.text) == "This form has expired"
    assert client.cookies["giftcard_cart"] == "mug:10"

    set_cart_cookie(client, "mug:99|hat:1|poster:2|tote:x|notebook:0|:3")
    assert "Cart (2)" in (await client.get("/store/cart")).text
    set_cart_cookie(client, "poster:1|" * 100)
    assert "Your cart is empty." in (await client.get("/store/cart")).text


# --- checkout ---------------------------------------------------------------------------


async def test_checkout_needs_a_logged_in_shopper_and_something_in_the_cart(
    client: httpx.AsyncClient,
) -> None:
    """A visitor is sent to log in and back; the cart survives signing up; an empty cart
    sends the shopper back to it."""
    await add(client, "mug")

    page = await client.get("/store/checkout")
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/store/checkout"
    sent = await client.post("/store/checkout", data={"csrf_token": await csrf(client)})
    assert sent.status_code == 303
    assert sent.headers["location"] == "/login?next=/store/checkout"

    await web_sign_up(client)
    assert heading(await open_checkout(client)) == "Checkout"

    await web_post(client, "/store/cart/remove", {"product": "mug"})
    empty = await client.get("/store/checkout")
    assert empty.headers["location"] == "/store/cart"
    assert flash((await follow(client, empty)).text).startswith("Your cart is empty.")


async def test_split_tender_the_balance_pays_first_and_the_test_card_the_rest(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given $25.00 of balance and a $48.00 cart, checkout offers the whole balance by
    default; placing the order takes $25.00 from the balance and charges $23.00 to the
    test card, through one captured payment and one order, and empties the cart."""
    email = await shopper_with_balance(client, services, 2500)
    await add(client, "mug")
    await add(client, "poster")

    page = await open_checkout(client)

    words = text_of(page)
    assert heading(page) == "Checkout"
    assert f"Total {usd(4800)}" in words
    assert f"Your gift card balance: {usd(2500)} available." in words
    assert "<legend>Gift card balance</legend>" in page
    assert f'<label for="use_balance">Use your gift card balance ({usd(2500)})</label>' in page
    assert '<label for="use_balance-amount">Use a chosen amount</label>' in page
    assert '<label for="use_balance-none">Don\'t use my balance</label>' in page
    assert '<label for="use_balance_amount">Amount from your balance</label>' in page
    assert re.search(
        r'<input id="use_balance_amount" name="use_balance_amount"[^>]*'
        r"data-chosen-amount",
        page,
    )
    assert checked_choice(page) == "max"
    assert re.search(r'<div class="test-card">\s*<p>' + re.escape(TEST_CARD_SENTENCE), page)
    assert store.is_order_id(hidden_value(page, "order_id"))
    assert ">Place order</button>" in page
    assert summary(page) == {"Gift card balance": f"−{usd(2500)}", "To pay by card": usd(2300)}
    assert re.search(
        r'<button type="submit" name="action" value="recalculate"[^>]*>Recalculate<', page
    )

    placed = await place(client, page)
    order_id = ORDER_PATH.match(placed.headers["location"])
    assert order_id
    order = await follow(client, placed)

    assert heading(order.text) == "Thank you for your order"
    assert summary(order.text) == {
        "Order total": usd(4800),
        "Paid with gift card balance": usd(2500),
        "Charged to test card": usd(2300),
    }
    assert ">Request refund</a>" in order.text
    assert "Cart (0)" in order.text
    assert await balance_of(client, email) == {
        "currency": "USD",
        "available": 0,
        "held": 0,
        "total": 0,
    }
    payment = await payment_of(services, order_id.group(1))
    assert (payment.status, payment.amount, payment.gift_card_amount, payment.other_amount) == (
        "captured",
        4800,
        2500,
        2300,
    )
    assert await count_rows(services, store_orders, store_orders.c.payment_id == payment.id) == 1
    later = await client.get(placed.headers["location"])
    assert heading(later.text) == "Your order"


async def test_recalculate_shows_the_split_for_a_new_choice_and_places_nothing(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Without JavaScript, Recalculate re-renders checkout with the summary's split for
    the choice made (a chosen amount, none), keeps the form's order id, and pays
    nothing; an amount checkout would refuse is refused beside its field."""
    email = await shopper_with_balance(client, services, 4000)
    await add(client, "mug")
    await add(client, "poster")
    page = await open_checkout(client)
    assert summary(page) == {"Gift card balance": f"−{usd(4000)}", "To pay by card": usd(800)}

    chosen = await place(client, page, "amount", "12.50", action="recalculate")

    assert chosen.status_code == 200, chosen.text
    assert heading(chosen.text) == "Checkout"
    assert summary(chosen.text) == {
        "Gift card balance": f"−{usd(1250)}",
        "To pay by card": usd(3550),
    }
    assert checked_choice(chosen.text) == "amount"
    assert hidden_value(chosen.text, "order_id") == hidden_value(page, "order_id")
    none = await place(client, page, "none", action="recalculate")
    assert summary(none.text) == {"Gift card balance": usd(0), "To pay by card": usd(4800)}
    refused = await place(client, page, "amount", "45.00", action="recalculate")
    assert refused.status_code == 422
    assert "more than your gift card balance" in (
        field_error(refused.text, "use_balance_amount") or ""
    )
    assert summary(refused.text)["To pay by card"] == "Check the amount"

    assert await count_rows(services, payments) == 0
    assert (await balance_of(client, email))["available"] == 4000
    _, order = await checkout(client, "amount", "12.50")
    assert summary(order)["Charged to test card"] == usd(3550)


async def test_adding_to_the_cart_keeps_the_shoppers_place_and_says_how_many(
    client: httpx.AsyncClient,
) -> None:
    """Add to cart returns to the product's own place on the store page (its anchor),
    where the product now says how many of it are in the cart."""
    await add(client, "tote")
    await add(client, "tote")

    page = (await client.get("/store")).text

    tote = re.search(r'<h2 id="product-tote">.*?</li>', page, re.S)
    assert tote
    assert '<a href="/store/cart" data-testid="in-cart">2 in your cart</a>' in tote.group(0)
    assert page.count('data-testid="in-cart"') == 1


async def test_the_balance_alone_pays_an_order_it_covers(
    client: httpx.AsyncClient, services: Services
) -> None:
    """With more balance than the total, the balance pays it all and the card nothing."""
    email = await shopper_with_balance(client, services, 5000)
    await add(client, "mug")

    _, order = await checkout(client)

    assert summary(order)["Paid with gift card balance"] == usd(1800)
    assert summary(order)["Charged to test card"] == usd(0)
    assert (await balance_of(client, email))["available"] == 3200


async def test_a_chosen_amount_of_the_balance_pays_exactly_that(
    client: httpx.AsyncClient, services: Services
) -> None:
    email = await shopper_with_balance(client, services, 2500)
    await add(client, "poster")

    _, order = await checkout(client, "amount", "10.50")

    assert summary(order)["Paid with gift card balance"] == usd(1050)
    assert summary(order)["Charged to test card"] == usd(1950)
    assert (await balance_of(client, email))["available"] == 1450


async def test_a_chosen_amount_is_checked_beside_its_field_and_nothing_is_paid(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given $25.00 of balance and an $18.00 cart: an amount with too many decimals, above
    the balance, above the total, negative, zero, empty or not a number is refused beside
    the amount field, the choice and what was typed kept; no payment, no order. The same
    page then places the order once the amount is right."""
    email = await shopper_with_balance(client, services, 2500)
    await add(client, "mug")
    page = await open_checkout(client)
    order_id = hidden_value(page, "order_id")
    refusals = {
        "10.505": "USD has 2 decimals: write it like $10,505.00 or $10.50.",
        "30.00": f"That is more than your gift card balance of {usd(2500)}.",
        "20.00": f"That is more than the order total of {usd(1800)}.",
        "-5": "The amount must be more than zero: write it like $10.50.",
        "1e3": "'1e3' is not an amount: write it like $10.50.",
        "12,50": "'12,50' is not how the United States store writes amounts: write it like "
        "$1,250.00 or $12.50.",
        "5 €": "The United States store takes USD, not €: write it like $5.00.",
        "0": "The amount must be more than zero: write it like $10.50.",
        "": "Enter the amount to use from your gift card balance.",
        "9" * 40: "That is too long for an amount: write it like $10.50.",
    }

    for typed, message in refusals.items():
        refused = await place(client, page, "amount", typed)

        assert refused.status_code == 422, (typed, refused.text)
        error = field_error(refused.text, "use_balance_amount")
        assert error is not None, typed
        assert message in error, (typed, error)
        assert checked_choice(refused.text) == "amount"
        assert hidden_value(refused.text, "order_id") == order_id
        assert 'href="#use_balance_amount"' in refused.text

    unknown_choice = await place(client, page, "everything")
    assert unknown_choice.status_code == 422
    assert "Choose how much of your gift card balance to use." in text_of(unknown_choice.text)

    assert (await balance_of(client, email))["available"] == 2500
    assert await count_rows(services, payments) == 0
    assert await count_rows(services, store_orders) == 0

    placed = await place(client, page, "amount", "5")
    assert ORDER_PATH.match(placed.headers["location"])
    assert (await balance_of(client, email))["available"] == 2000


async def test_the_japan_store_takes_whole_yen(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Yen have no minor unit: ¥1,000 is 1000, and a chosen amount with decimals is
    refused, not rounded."""
    email = await shopper_with_balance(client, services, 3000, "JP")
    await add(client, "mug")
    page = await open_checkout(client)
    assert '<label for="use_balance">Use your gift card balance (¥2,600)</label>' in page

    refused = await place(client, page, "amount", "1000.5")
    assert refused.status_code == 422
    assert "JPY has no decimals: write it like ¥1,000." in (
        field_error(refused.text, "use_balance_amount") or ""
    )

    placed = await follow(client, await place(client, page, "amount", "1000"))
    assert summary(placed.text)["Paid with gift card balance"] == "¥1,000"
    assert summary(placed.text)["Charged to test card"] == "¥1,600"
    assert await balance_of(client, email) == {
        "currency": "JPY",
        "available": 2000,
        "held": 0,
        "total": 2000,
    }


@pytest.mark.parametrize(
    ("region", "balance", "typed", "paid"),
    [
        ("US", 5000, "$5.00", 500),
        ("US", 5000, "5", 500),
        ("DE", 5000, "10,50", 1050),
        ("DE", 5000, "10,50 €", 1050),
        ("FR", 5000, "10,50€", 1050),
        ("JP", 5000, "¥1,000", 1000),
        ("IN", 300_000, "₹1,000", 100_000),
    ],
)
async def test_a_chosen_amount_is_read_as_the_shoppers_store_writes_it(
    client: httpx.AsyncClient,
    services: Services,
    region: str,
    balance: int,
    typed: str,
    paid: int,
) -> None:
    """A shopper types the amount the way their store shows money, with or without its
    sign, and the balance pays exactly that; the hint beside the field shows the way."""
    store_region = REGIONS[region]
    shown = partial(format_minor, currency=store_region.currency, locale=store_region.locale)
    email = await shopper_with_balance(client, services, balance, region)
    await add(client, "poster")
    page = await open_checkout(client)
    poster = store.PRODUCTS["poster"].price(store_region.currency)
    assert f"write it like {shown(1050 if store_region.exponent else 500)}." in page

    order = await follow(client, await place(client, page, "amount", typed))

    assert summary(order.text)["Paid with gift card balance"] == text_of(shown(paid))
    assert summary(order.text)["Charged to test card"] == text_of(shown(poster - paid))
    assert (await balance_of(client, email))["available"] == balance - paid


async def test_a_german_shopper_is_told_how_germany_writes_an_amount(
    client: httpx.AsyncClient, services: Services
) -> None:
    """In the Germany store the hint shows 28,00 € and 10,50 €, never 28.00; what could
    be read two ways, or is in another currency, is refused in German notation and pays
    nothing."""
    email = await shopper_with_balance(client, services, 5000, "DE")
    await add(client, "poster")
    page = await open_checkout(client)
    hint = "Up to 28,00\u00a0€; write it like 10,50\u00a0€."
    assert hint in page
    refusals = {
        "1,234": "EUR has 2 decimals: write it like 1.234,00 € or 1,23 €.",
        "10.50": "'10.50' is not how the Germany store writes amounts: write it like "
        "1.050,00 € or 10,50 €.",
        "$5": "The Germany store takes EUR, not $: write it like 5,00 €.",
        # One thousand two hundred and thirty-four euros, not one point two.
        "1.234": "That is more than your gift card balance of 50,00 €.",
    }

    for typed, message in refusals.items():
        refused = await place(client, page, "amount", typed)

        assert refused.status_code == 422, (typed, refused.text)
        assert field_error(refused.text, "use_balance_amount") == message, typed
        assert f'value="{typed}"' in refused.text
    assert (await balance_of(client, email))["available"] == 5000
    assert await count_rows(services, payments) == 0


async def test_not_using_the_balance_charges_the_test_card_in_full(
    client: httpx.AsyncClient, services: Services
) -> None:
    email = await shopper_with_balance(client, services, 2500)
    await add(client, "mug")

    _, order = await checkout(client, "none")

    assert summary(order)["Paid with gift card balance"] == usd(0)
    assert summary(order)["Charged to test card"] == usd(1800)
    assert (await balance_of(client, email))["available"] == 2500


async def test_the_same_checkout_sent_twice_or_at_once_pays_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    """A checkout form sent again after it worked (a reload, the back button) and three
    copies of one sent at the same moment each lead to their one order, paid once."""
    email = await shopper_with_balance(client, services, 2500)
    await add(client, "poster")
    page = await open_checkout(client)

    first = await place(client, page)
    again = await place(client, page)

    assert again.status_code == 303
    assert again.headers["location"] == first.headers["location"]
    shown = await follow(client, again)
    assert heading(shown.text) == "Thank you for your order"
    assert flash(shown.text).startswith("This order was placed already.")
    assert (await balance_of(client, email))["available"] == 0
    assert await count_rows(services, payments) == 1
    assert (await client.get("/store/checkout")).headers["location"] == "/store/cart"

    await add_balance(client, services, 2500)
    await add(client, "mug")
    page = await open_checkout(client)
    racing = await asyncio.gather(*(place(client, page) for _ in range(3)))

    assert [response.status_code for response in racing] == [303, 303, 303], [
        response.text for response in racing
    ]
    [location] = {response.headers["location"] for response in racing}
    assert ORDER_PATH.match(location)
    assert location != first.headers["location"]
    assert await count_rows(services, payments) == 2
    assert await count_rows(services, store_orders) == 2
    assert (await balance_of(client, email))["available"] == 2500 - 1800


async def test_checkout_refuses_a_stale_or_forged_form_and_pays_nothing(
    client: httpx.AsyncClient, services: Services
) -> None:
    """A cart changed since the page was opened, an order id that is not one, and a form
    without its CSRF token are each refused with a clear message; nothing is paid."""
    email = await shopper_with_balance(client, services, 2500)
    await add(client, "mug")
    page = await open_checkout(client)
    await add(client, "notebook")

    changed = await place(client, page)

    assert changed.status_code == 409
    assert "Your cart changed since this page was opened" in text_of(changed.text)
    assert f"Total {usd(3050)}" in text_of(changed.text)
    assert hidden_value(changed.text, "total") == "3050"

    malformed = await place(client, page, order_id="ord_123", total="3050")
    assert malformed.headers["location"] == "/store/checkout"
    assert "This checkout form was incomplete" in flash((await follow(client, malformed)).text)

    no_token = await client.post(
        "/store/checkout",
        data={"order_id": hidden_value(page, "order_id"), "total": "3050", "use_balance": "max"},
    )
    assert no_token.status_code == 403

    assert (await balance_of(client, email))["available"] == 2500
    assert await count_rows(services, payments) == 0


# --- orders and refunds ----------------------------------------------------------------


async def test_refund_returns_the_balance_part_to_the_balance_and_the_rest_to_the_card(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    """Given a $48.00 order paid $25.00 by the balance and $23.00 by the test card, and
    the default refund preference (the original payment method): the refund step offers
    the whole $48.00, the confirmation says $25.00 goes to the balance and $23.00 to the
    test card, and only confirming refunds it, with a banner saying what was done; a
    second request refunds nothing and says so; the ledger still checks out."""
    email = await shopper_with_balance(client, services, 2500)
    await add(client, "mug")
    await add(client, "poster")
    number, order = await checkout(client)
    assert f'<a class="button secondary" href="/store/orders/{number}/refund"' in order

    step = await client.get(f"/store/orders/{number}/refund")
    assert heading(step.text) == "Refund your order"
    assert hidden_value(step.text, "amount") == usd(4800)
    assert '<label for="amount">Amount to refund</label>' in step.text
    review = await web_post(client, f"/store/orders/{number}/refund", {"amount": "48.00"})
    assert review.status_code == 200
    assert heading(review.text) == "Confirm your refund"
    assert summary(review.text) == {
        "To your gift card balance": usd(2500),
        "To your test card": usd(2300),
    }
    assert ">Confirm refund</button>" in review.text
    assert await count_rows(services, refunds) == 0

    refunded = await refund(client, number)

    assert refunded.headers["location"] == f"/store/orders/{number}"
    page = (await follow(client, refunded)).text
    assert flash(page) == (
        f"Refunded {usd(4800)}: {usd(2500)} to your gift card balance, "
        f"{usd(2300)} to your test card."
    )
    assert summary(page) == {
        "Order total": usd(4800),
        "Paid with gift card balance": usd(2500),
        "Charged to test card": usd(2300),
        "Refunded": usd(4800),
        "Refunded to your gift card balance": usd(2500),
        "Refunded to the test card": usd(2300),
    }
    assert "Request refund" not in page
    assert (await balance_of(client, email))["available"] == 2500
    closed = await client.get(f"/store/orders/{number}/refund")
    assert closed.headers["location"] == f"/store/orders/{number}"

    second = await web_post(
        client, f"/store/orders/{number}/refund", {"amount": "1.00", "confirm": "yes"}
    )

    assert second.status_code == 303
    assert flash((await follow(client, second)).text).startswith(
        "This order has been refunded in full already."
    )
    assert (await balance_of(client, email))["available"] == 2500
    assert await count_rows(services, refunds) == 1
    assert (await verify(services.db)).problems == []
    result = await run_verify(database_url)
    assert result.exit_code == 0, result.output


async def test_a_partial_refund_gives_the_balance_its_part_first_then_the_card(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given $48.00 paid $25.00 by the balance and $23.00 by the card: refunding $30.00
    sends $25.00 to the balance and $5.00 to the card; the rest, $18.00, all to the card."""
    email = await shopper_with_balance(client, services, 2500)
    await add(client, "mug")
    await add(client, "poster")
    number, _ = await checkout(client)

    first = await follow(client, await refund(client, number, "30"))

    assert flash(first.text) == (
        f"Refunded {usd(3000)}: {usd(2500)} to your gift card balance, "
        f"{usd(500)} to your test card."
    )
    assert summary(first.text)["Refunded"] == usd(3000)
    assert text_of(first.text).count("Partly refunded") == 1
    assert (await balance_of(client, email))["available"] == 2500

    step = await client.get(f"/store/orders/{number}/refund")
    assert hidden_value(step.text, "amount") == usd(1800)
    rest = await follow(client, await refund(client, number))

    assert flash(rest.text) == f"Refunded {usd(1800)}: {usd(1800)} to your test card."
    assert (await payment_of(services, number)).refunded_amount == 4800
    assert (await verify(services.db)).problems == []


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("48.01", f"That is more than the {usd(4800)} this order can still refund."),
        ("10.505", "USD has 2 decimals: write it like $10,505.00 or $10.50."),
        ("0", "The amount must be more than zero: write it like $10.50."),
        ("-5", "The amount must be more than zero: write it like $10.50."),
        ("", "Enter the amount to refund."),
        ("9" * 40, "That is too long for an amount: write it like $10.50."),
    ],
)
async def test_a_refund_amount_is_checked_beside_its_field_and_nothing_is_refunded(
    client: httpx.AsyncClient, services: Services, typed: str, message: str
) -> None:
    """An amount above what is left, with too many decimals, zero, negative, empty or
    not a number is refused beside the field at either step, what was typed kept."""
    await shopper_with_balance(client, services, 2500)
    await add(client, "mug")
    await add(client, "poster")
    number, _ = await checkout(client)

    for confirm in ("", "yes"):
        refused = await web_post(
            client, f"/store/orders/{number}/refund", {"amount": typed, "confirm": confirm}
        )

        assert refused.status_code == 422, refused.text
        assert heading(refused.text) == "Refund your order"
        error = field_error(refused.text, "amount")
        assert error is not None
        assert message in error, error
        assert 'href="#amount"' in refused.text
    assert await count_rows(services, refunds) == 0


async def test_refund_requests_sent_at_once_refund_the_order_once(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Four confirmations of the whole refund arriving together: one refund is made, the
    balance gets its part back once, and every one ends on the order page (no error)."""
    email = await shopper_with_balance(client, services, 2500)
    await add(client, "poster")
    number, _ = await checkout(client)
    token = await csrf(client)

    racing = await asyncio.gather(
        *(
            client.post(
                f"/store/orders/{number}/refund",
                data={"csrf_token": token, "amount": "30.00", "confirm": "yes"},
            )
            for _ in range(4)
        )
    )

    assert [response.status_code for response in racing] == [303] * 4, [
        response.text for response in racing
    ]
    assert {response.headers["location"] for response in racing} == {f"/store/orders/{number}"}
    assert await count_rows(services, refunds) == 1
    assert (await balance_of(client, email))["available"] == 2500
    assert (await verify(services.db)).problems == []


async def test_two_partial_refunds_confirmed_at_once_never_refund_more_than_was_paid(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Two confirmations of $30.00 each for a $48.00 order arriving together: one is
    refunded; the other is refused beside its amount (the order has only $18.00 left),
    with a page and not an error, and nothing more moves."""
    email = await shopper_with_balance(client, services, 2500)
    await add(client, "mug")
    await add(client, "poster")
    number, _ = await checkout(client)
    token = await csrf(client)

    racing = await asyncio.gather(
        *(
            client.post(
                f"/store/orders/{number}/refund",
                data={"csrf_token": token, "amount": "30.00", "confirm": "yes"},
            )
            for _ in range(2)
        )
    )

    statuses = sorted(response.status_code for response in racing)
    assert statuses in ([303, 409], [303, 422]), [response.text for response in racing]
    [refused] = [response for response in racing if response.status_code != 303]
    assert heading(refused.text) == "Refund your order"
    error = field_error(refused.text, "amount") or ""
    assert usd(1800) in error, error
    assert await count_rows(services, refunds) == 1
    assert (await payment_of(services, number)).refunded_amount == 3000
    assert (await balance_of(client, email))["available"] == 2500
    assert (await verify(services.db)).problems == []


async def test_in_the_demo_a_balance_preference_refunds_the_test_card_part_labelled_pretend(
    client: httpx.AsyncClient, services: Services
) -> None:
    """In the demo, a shopper who wants refunds on their balance is told before
    confirming that the whole order goes back there, the test card's part as store
    credit, and gets it; every store page, this one too, says the test card is pretend
    money. Outside the demo there is no such page (test_demo_store.py)."""
    email = await shopper_with_balance(client, services, 2500)
    saved = await web_post(
        client, "/account/refund-preference", {"refund_preference": "gift_card_balance"}
    )
    assert saved.status_code == 303
    await add(client, "mug")
    await add(client, "poster")
    number, _ = await checkout(client)

    review = await web_post(client, f"/store/orders/{number}/refund", {"amount": "48"})
    assert summary(review.text) == {
        "To your gift card balance": usd(4800),
        "To your test card": usd(0),
    }
    assert DEMO_NOTE in text_of(review.text)
    refunded = await refund(client, number)

    page = (await follow(client, refunded)).text
    assert flash(page) == f"Refunded {usd(4800)}: {usd(4800)} to your gift card balance."
    assert DEMO_NOTE in text_of(page)
    assert (await balance_of(client, email))["available"] == 4800
    assert (await verify(services.db)).problems == []


async def test_orders_list_newest_first_by_number_with_a_refund_link_while_refundable(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Orders are listed and linked by their short numbers, which tell nothing of how
    many orders there are; an order's page also answers to its number typed loosely
    (lower case, spaces) and to the checkout's own id, by sending to the one address."""
    await shopper_with_balance(client, services, 0)
    await add(client, "mug")
    older, _ = await checkout(client)
    await add(client, "poster")
    newer, page = await checkout(client)

    listing = (await client.get("/store/orders")).text

    assert heading(listing) == "Your orders"
    links = re.findall(rf'<a href="/store/orders/({ORDER_NUMBER})">Order \1</a>', listing)
    assert links == [newer, older]
    assert listing.count(">Request refund</a>") == 2
    words = text_of(listing)
    assert f"Total {usd(3000)} Status Paid" in words
    assert f"Total {usd(1800)} Status Paid" in words
    assert f'<span class="order-id" data-testid="order-number">{newer}</span>' in page
    assert "ord_" not in listing + page

    loose = newer.lower().replace("-", " ").replace("0", "o")
    again = await client.get(f"/store/orders/{loose}")
    assert again.headers["location"] == f"/store/orders/{newer}"
    order_id = (await payment_of(services, newer)).order_id
    assert (await client.get(f"/store/orders/{order_id}")).headers[
        "location"
    ] == f"/store/orders/{newer}"

    await refund(client, older)
    listing = (await client.get("/store/orders")).text

    assert listing.count(">Request refund</a>") == 1
    assert f"Total {usd(1800)} Status Refunded" in text_of(listing)


async def test_existing_orders_are_numbered_by_the_migration(
    client: httpx.AsyncClient, services: Services, database_url: str
) -> None:
    """Orders placed before order numbers existed (the schema taken back to 0008) each
    get a different valid number when the migration runs again, and the column is then
    required: an order without one is refused by the database."""
    await shopper_with_balance(client, services, 0)
    for product in ("mug", "poster", "tote"):
        await add(client, product)
        await checkout(client)
    await services.db.dispose()
    db = Database(database_url, pool_size=1)
    try:
        async with db.transaction() as connection:
            await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0008"))
        await upgrade(database_url)
        async with db.transaction(write=False) as connection:
            numbers = (await connection.execute(select(store_orders.c.number))).scalars().all()
        assert len(set(numbers)) == 3
        assert all(re.fullmatch(ORDER_NUMBER, number) for number in numbers)
        with pytest.raises(IntegrityError):
            async with db.transaction() as connection:
                await connection.execute(
                    update(store_orders).values(number=None).where(store_orders.c.id > 0)
                )
    finally:
        await db.dispose()


async def test_another_shoppers_order_is_not_found_and_cannot_be_refunded_or_reused(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Shopper B asking for shopper A's order, refunding it, or checking out with its id
    gets a page, never a 500, and nothing of A's or B's changes; unknown and malformed
    order numbers are not found either."""
    await shopper_with_balance(client, services, 2500)
    await add(client, "poster")
    theirs, _ = await checkout(client)
    their_id = (await payment_of(services, theirs)).order_id
    assert (await web_post(client, "/logout")).status_code == 303
    email = await shopper_with_balance(client, services, 2500)

    for path in (
        f"/store/orders/{theirs}",
        f"/store/orders/{their_id}",
        f"/store/orders/{theirs}/refund",
        "/store/orders/GC-0000-00",
        "/store/orders/ord_" + "0" * 32,
        "/store/orders/nonsense",
        "/store/orders/GC-%00",
        "/store/orders/" + "G" * 100,
    ):
        missing = await client.get(path)
        assert missing.status_code == 404, path
        assert heading(missing.text) == "Not found"
    refused = await web_post(
        client, f"/store/orders/{theirs}/refund", {"amount": "30", "confirm": "yes"}
    )
    assert refused.status_code == 404
    assert (await payment_of(services, theirs)).refunded_amount == 0
    assert "No orders yet." in (await client.get("/store/orders")).text

    await add(client, "mug")
    page = await open_checkout(client)
    reused = await place(client, page, order_id=their_id)

    assert reused.status_code == 409
    assert "This checkout page can no longer be used." in text_of(reused.text)
    assert hidden_value(reused.text, "order_id") not in (their_id, hidden_value(page, "order_id"))
    assert (await balance_of(client, email))["available"] == 2500
    assert await count_rows(services, payments) == 1
