"""What every page of the demo store shares: its templates, the cart cookie it reads for
the cart's count in its links, and the one helper that renders a store page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from giftcard.demo import store
from giftcard.web.templating import make_templates, page

STORE_PAGE = "/store"
CART_COOKIE = "giftcard_cart"
CART_COOKIE_TTL_S = 30 * 86400
# Room for every product of the catalog with two-digit quantities, and no more.
CART_COOKIE_LENGTH_MAX = 300

# The store's own templates; they extend the site's base page.
templates = make_templates(Path(__file__).parent / "templates")


def read_cart(request: Request) -> store.Cart:
    raw = request.cookies.get(CART_COOKIE, "")
    if len(raw) > CART_COOKIE_LENGTH_MAX:
        return {}
    cart: store.Cart = {}
    for part in raw.split("|"):
        product_id, _, quantity = part.partition(":")
        if quantity.isascii() and quantity.isdigit() and len(quantity) <= 2:
            cart[product_id] = int(quantity)
    return store.clean_cart(cart)


def store_page(
    request: Request,
    template: str,
    section: str,
    context: dict[str, Any],
    *,
    status: int = 200,
) -> Response:
    """A page of the store, with its own links: products, the cart, the orders."""
    full = {
        "section": section,
        "cart_count": store.item_count(read_cart(request)),
        "problem": None,
        **context,
    }
    return page(request, template, full, status=status, renderer=templates)
