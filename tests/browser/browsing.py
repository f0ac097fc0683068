"""What browser tests share: a tab that checks every page it shows, the live server, and
the shopper's flows (sign up, redeem, buy in the demo store) as a person would do them.

`Tab.arrive` is what every page goes through: a full-page screenshot in
`build/screenshots/<test>-<NN>-<step>.png`, then the checks: no JavaScript error in the
console or thrown by the page, no sideways scrolling, no form control without a label, no
amount of money broken across two lines.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Error, Frame, Locator, Page
from playwright.sync_api import Response as PageResponse

from giftcard.codes import ALPHABET, check_code, format_code, normalize_code
from giftcard.errors import ErrorCode, RedemptionError
from giftcard.money import format_minor
from tests.e2e.server import HTTP_TIMEOUT_S, Server, issue_cards

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
PASSWORD = "correct horse battery"
ACCOUNT_PAGE = "/account/gift-cards"
HISTORY_PAGE_SIZE = 10
MISTYPED_MESSAGE = "Check the code — one character looks mistyped."
ACTION_TIMEOUT_MS = 5_000
NAVIGATION_TIMEOUT_MS = 10_000
PHONE_WIDTH = 390
PHONE_HEIGHT = 844
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
PHONE: dict[str, Any] = {
    "viewport": {"width": PHONE_WIDTH, "height": PHONE_HEIGHT},
    "is_mobile": True,
    "has_touch": True,
}
# A page whose own document answers 4xx makes Chromium log this console error; the test
# that opened the page asserts that status itself, so only subresources count here.
_DOCUMENT_STATUS = re.compile(
    r"^Failed to load resource: the server responded with a status of (\d{3})\b"
)
# Dollar amounts in the page's text whose characters do not all sit on one line.
_AMOUNTS_BROKEN_ACROSS_LINES = r"""() => {
  const amount = /[-+]?\$\d{1,3}(?:,\d{3})*\.\d{2}/g;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const broken = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const match of node.data.matchAll(amount)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const boxes = Array.from(range.getClientRects()).filter((box) => box.width > 0);
      const lines = new Set(boxes.map((box) => Math.round(box.bottom)));
      const row = node.parentElement.closest("div, li, tr, p") || node.parentElement;
      const text = row.textContent.replace(/\s+/g, " ").trim();
      if (lines.size > 1) broken.push(`${match[0]} in "${text}"`);
    }
  }
  return broken;
}"""
# Form controls a person can see or reach that no label names.
_UNLABELLED_CONTROLS = r"""() => Array.from(
  document.querySelectorAll("input:not([type=hidden]), select, textarea")
).filter((control) => control.labels.length === 0 && !control.getAttribute("aria-label"))
 .map((control) => control.outerHTML)"""
_MONEY_US = re.compile(r"(-?)\$(\d{1,3}(?:,\d{3})*)\.(\d{2})")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "home"


class Shots:
    """Numbered screenshot paths for one test, `<prefix>-<NN>-<step>.png`; the previous
    run's screenshots of this prefix are removed first, so none is stale."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.count = 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for old in SCREENSHOTS.glob(f"{prefix}-[0-9][0-9]-*.png"):
            old.unlink()

    def next_path(self, step: str) -> Path:
        self.count += 1
        return SCREENSHOTS / f"{self.prefix}-{self.count:02d}-{slug(step)}.png"


class Tab:
    """One page in a browser context of its own (its own cookies), watched from the start:
    console errors, uncaught page errors, and every main-frame navigation."""

    def __init__(
        self, context: BrowserContext, shots: Shots, *, base_url: str, phone: bool
    ) -> None:
        self.context = context
        self.base_url = base_url
        self.shots = shots
        self.phone = phone
        self.page: Page = context.new_page()
        self.unchecked: list[str] = []
        self._console: list[tuple[str, str]] = []
        self._page_errors: list[str] = []
        self._document_statuses: dict[str, set[int]] = {}
        self.page.on("console", self._on_console)
        self.page.on("pageerror", self._on_page_error)
        self.page.on("response", self._on_response)
        self.page.on("framenavigated", self._on_navigated)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self._console.append((message.text, str(message.location.get("url", ""))))

    def _on_page_error(self, error: Error) -> None:
        self._page_errors.append(f"{error.name}: {error.message}")

    def _on_response(self, response: PageResponse) -> None:
        request = response.request
        if request.is_navigation_request() and response.frame.parent_frame is None:
            self._document_statuses.setdefault(response.url, set()).add(response.status)

    def _on_navigated(self, frame: Frame) -> None:
        if frame.parent_frame is None:
            self.unchecked.append(frame.url)

    def errors(self) -> list[str]:
        """JavaScript errors so far, and resources other than the page itself that failed."""
        found = [f"page error: {error}" for error in self._page_errors]
        for text, url in self._console:
            status = _DOCUMENT_STATUS.match(text)
            if status and int(status.group(1)) in self._document_statuses.get(url, set()):
                continue
            found.append(f"console error: {text} (at {url})")
        return found

    def arrive(self, step: str | None) -> None:
        """Save the screenshot of the page now shown (none when `step` is None, for a page
        already photographed in the same state), then check the page."""
        page = self.page
        page.wait_for_load_state("load")
        if step is not None:
            path = self.shots.next_path(step)
            page.screenshot(path=path, full_page=True)
        where = f"{page.url} ({step or 'not photographed'})"
        errors = self.errors()
        assert not errors, f"JavaScript errors by {where}:\n" + "\n".join(errors)
        width, content_width = page.evaluate(
            "[window.innerWidth, document.documentElement.scrollWidth]"
        )
        assert content_width <= width, (
            f"{where} scrolls sideways: {content_width}px of content in a {width}px window"
        )
        if self.phone:
            assert width == PHONE_WIDTH, f"{where} was zoomed out to {width}px on a phone"
        unlabelled = page.evaluate(_UNLABELLED_CONTROLS)
        assert not unlabelled, f"{where} has form controls without a label: {unlabelled}"
        broken = page.evaluate(_AMOUNTS_BROKEN_ACROSS_LINES)
        assert not broken, f"{where} breaks amounts across lines: {broken}"
        self.unchecked.clear()

    def absolute(self, path: str) -> str:
        return urljoin(self.base_url, path)

    def goto(self, path: str, step: str | None, *, status: int = 200) -> PageResponse:
        response = self.page.goto(path)
        assert response is not None, path
        assert response.status == status, (path, response.status, self.page.url)
        self.arrive(step)
        return response

    @contextlib.contextmanager
    def navigation(self, step: str | None, *, status: int = 200) -> Iterator[None]:
        """The action in the block makes the page navigate (a link, a form): wait until
        the new page has loaded, check its status, then `arrive` at it."""
        with self.page.expect_navigation() as navigation:
            yield
        response = navigation.value
        assert response is not None, f"no document answered the navigation from {step}"
        assert response.status == status, (step, response.status, response.url)
        self.arrive(step)

    def field(self, label: str) -> Locator:
        return self.page.get_by_label(label, exact=True)

    def button(self, name: str) -> Locator:
        return self.page.get_by_role("button", name=name, exact=True)

    def link(self, name: str) -> Locator:
        return self.page.get_by_role("link", name=name, exact=True)

    def nav(self, name: str) -> Locator:
        """A link or button of the site's main navigation."""
        main = self.page.get_by_role("navigation", name="Main")
        return main.get_by_role("link", name=name, exact=True).or_(
            main.get_by_role("button", name=name, exact=True)
        )

    def heading(self) -> Locator:
        return self.page.get_by_role("heading", level=1)

    def flash(self) -> Locator:
        return self.page.get_by_role("status")

    def available(self) -> Locator:
        return self.page.get_by_test_id("available")


class Tabs:
    """Opens tabs, each in a fresh browser context, and closes them all at the end."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.opened: list[Tab] = []

    def open(self, prefix: str, *, phone: bool = False) -> Tab:
        """A logged-out tab; its screenshots are named `<prefix>-<NN>-<step>.png`."""
        context = self.browser.new_context(
            base_url=self.base_url,
            locale="en-US",
            timezone_id="UTC",
            service_workers="block",
            **(PHONE if phone else DESKTOP),
        )
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
        tab = Tab(context, Shots(prefix), base_url=self.base_url, phone=phone)
        self.opened.append(tab)
        return tab

    def close(self) -> None:
        for tab in self.opened:
            tab.context.close()


@dataclass
class Live:
    """The running server and an admin API key for it."""

    server: Server
    admin: dict[str, str]

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def card(self, amount: int, *, region: str = "US") -> dict[str, Any]:
        """A new digital card, with its code."""
        return issue_cards(self.server, self.admin, amount=amount, region=region)[0]

    def cards(self, amount: int, count: int, *, region: str = "US") -> list[dict[str, Any]]:
        return issue_cards(self.server, self.admin, amount=amount, region=region, count=count)

    def redeem_through_api(self, email: str, codes: list[str]) -> None:
        """Log the shopper in through the API and redeem each code there."""
        with httpx.Client(base_url=self.base_url, timeout=HTTP_TIMEOUT_S) as http:
            session = http.post("/v1/sessions", json={"email": email, "password": PASSWORD})
            assert session.status_code == 201, session.text
            auth = {"Authorization": f"Bearer {session.json()['token']}"}
            for code in codes:
                redeemed = http.post("/v1/me/redemptions", json={"code": code}, headers=auth)
                assert redeemed.status_code == 201, redeemed.text


def new_email(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@example.com"


def usd(amount_minor: int) -> str:
    """Money as the US store shows it, e.g. `$25.00`."""
    return format_minor(amount_minor, "USD", "en_US")


def minor_units(text: str) -> int:
    """The first US-dollar amount in `text`, in cents: `$1,234.50` is 123450."""
    found = _MONEY_US.search(text)
    assert found, f"no dollar amount in {text!r}"
    sign, dollars, cents = found.groups()
    amount = int(dollars.replace(",", "")) * 100 + int(cents)
    return -amount if sign else amount


def mistyped(code: str) -> str:
    """`code` with one character changed, shown with dashes, that `check_code` refuses as
    mistyped (not malformed, not a valid other code)."""
    normalized = normalize_code(code)
    position = 6
    for symbol in ALPHABET:
        if symbol == normalized[position]:
            continue
        candidate = normalized[:position] + symbol + normalized[position + 1 :]
        try:
            check_code(candidate)
        except RedemptionError as error:
            if error.code is ErrorCode.CODE_MISTYPED:
                return format_code(candidate)
    raise AssertionError(f"no single change at position {position} is refused as mistyped")


def spellings(code: str) -> set[str]:
    """Ways a code could be written: as issued, normalized, with dashes, in lower case."""
    normalized = normalize_code(code)
    forms = {code, normalized, format_code(normalized)}
    return {spelled for form in forms for spelled in (form, form.lower())}


def carries_code(text: str, code: str) -> bool:
    haystack = text.lower()
    return any(form.lower() in haystack for form in spellings(code))


def sign_up(tab: Tab, email: str, *, name: str = "", region: str = "US", step: str | None) -> None:
    """Fill the sign-up form that is shown and send it; the page after it is `step`."""
    tab.field("Email").fill(email)
    tab.field("Password").fill(PASSWORD)
    tab.field("Your name (optional)").fill(name)
    tab.field("Store").select_option(region)
    with tab.navigation(step):
        tab.button("Create account").click()


def history_rows(tab: Tab) -> Locator:
    return tab.page.locator("table.history tbody tr")


def summary_value(tab: Tab, term: str) -> Locator:
    """The value beside `term` in the order summary."""
    return tab.page.locator("dl.summary dt", has_text=term).locator(
        "xpath=following-sibling::dd[1]"
    )


@dataclass
class Cart:
    product: str
    quantity: int
    total: int


def fill_cart_above(tab: Tab, amount_minor: int) -> Cart:
    """On the store page: add the dearest product until the cart costs more than
    `amount_minor`, at most ten times; the store and the added state are photographed."""
    products = tab.page.locator("ul.products li")
    count = products.count()
    assert count > 0, "the store shows no products"
    prices = [minor_units(products.nth(i).locator("p.price").inner_text()) for i in range(count)]
    dearest = max(range(count), key=lambda i: prices[i])
    product = products.nth(dearest)
    name = product.get_by_role("heading", level=2).inner_text().strip()
    quantity = 0
    while prices[dearest] * quantity <= amount_minor:
        assert quantity < 10, f"ten of {name} still cost no more than {usd(amount_minor)}"
        with tab.navigation("store-added" if quantity == 0 else None):
            tab.page.locator("ul.products li").nth(dearest).get_by_role(
                "button", name="Add to cart"
            ).click()
        quantity += 1
    return Cart(name, quantity, prices[dearest] * quantity)


def place_order(tab: Tab, *, above: int) -> str:
    """Buy more than `above` in the demo store with the checkout's first choices; the
    order page's path."""
    tab.goto("/store", "store")
    cart = fill_cart_above(tab, above)
    with tab.navigation("cart"):
        tab.page.get_by_role("link", name=f"Cart ({cart.quantity})", exact=True).click()
    with tab.navigation("checkout"):
        tab.link("Checkout").click()
    with tab.navigation("order-placed"):
        tab.button("Place order").click()
    path = urlsplit(tab.page.url).path
    assert re.fullmatch(r"/store/orders/[^/]+", path), tab.page.url
    return path
