"""Every link of the site leads somewhere: a crawler follows each same-origin link from
the home page (logged out) and from the account pages (logged in, with a paged history
and an order in the demo store)."""

from __future__ import annotations

from collections import deque
from urllib.parse import urldefrag, urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.browsing import (
    ACCOUNT_PAGE,
    HISTORY_PAGE_SIZE,
    Live,
    Tab,
    Tabs,
    new_email,
    place_order,
    sign_up,
)
from tests.e2e.server import HTTP_TIMEOUT_S

pytestmark = pytest.mark.e2e

PAGES_MAX = 200
# Addresses of the service rather than pages: fetched with a plain request, not opened in
# the browser. Swagger UI at /docs is not one of the site's pages (test_docs.py opens it
# in the browser), and a browser showing JSON or text asks for /favicon.ico, which the
# service does not serve.
SERVICE_ADDRESSES = ("/docs", "/openapi.json", "/healthz", "/readyz", "/metrics")


def crawl(tab: Tab, start: str) -> dict[str, int]:
    """Follow every same-origin link, breadth first, from `start`: the status of each
    address reached. Pages are opened in the tab, so each is checked and photographed;
    service addresses are fetched with the tab's cookies."""
    page = tab.page
    origin = urlsplit(tab.base_url).netloc
    queue = deque([tab.absolute(start)])
    seen = set(queue)
    statuses: dict[str, int] = {}
    while queue:
        assert len(statuses) < PAGES_MAX, f"more than {PAGES_MAX} pages: {sorted(seen)[:20]}"
        url = queue.popleft()
        parts = urlsplit(url)
        if parts.path in SERVICE_ADDRESSES:
            statuses[url] = tab.context.request.get(url, max_redirects=5).status
            continue
        response = page.goto(url)
        assert response is not None, url
        statuses[url] = response.status
        tab.arrive(f"{parts.path} {parts.query}")
        for href in page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"):
            target, _ = urldefrag(href)
            target_parts = urlsplit(target)
            same_origin = target_parts.netloc == origin
            if target_parts.scheme in ("http", "https") and same_origin and target not in seen:
                seen.add(target)
                queue.append(target)
    broken = [f"{url} answered {status}" for url, status in statuses.items() if status >= 400]
    assert not broken, "broken links:\n" + "\n".join(broken)
    return statuses


def test_links_from_home_page_logged_out(tabs: Tabs, live: Live) -> None:
    """Logged out, every link reachable from the home page answers without an error."""
    tab = tabs.open("crawl-logged-out")
    reached = crawl(tab, "/")
    paths = {urlsplit(url).path for url in reached}
    assert {"/", "/signup", "/login", "/store", *SERVICE_ADDRESSES} <= paths, sorted(paths)


def test_links_from_account_pages_logged_in(tabs: Tabs, live: Live) -> None:
    """Logged in, with more history than one page and an order in the store, every link
    reachable from the account page answers without an error, the history pages too."""
    email = new_email("crawl")
    tab = tabs.open("crawl-logged-in")
    tab.goto("/signup", None)
    sign_up(tab, email, step=None)
    cards = live.cards(500, HISTORY_PAGE_SIZE + 1)
    live.redeem_through_api(email, [card["code"] for card in cards])
    place_order(tab, above=0)

    tab.goto(ACCOUNT_PAGE, None)
    expect(tab.link("Older")).to_be_visible()
    reached = crawl(tab, ACCOUNT_PAGE)
    paths = {urlsplit(url).path for url in reached}
    queries = {urlsplit(url).query for url in reached if urlsplit(url).path == ACCOUNT_PAGE}
    assert any(query.startswith("starting_after=") for query in queries), sorted(reached)
    assert {"/store", "/store/cart", "/store/orders"} <= paths, sorted(paths)
    assert any(path.startswith("/store/orders/") for path in paths), sorted(paths)


def test_service_addresses_answer(live: Live) -> None:
    """The API documentation, the OpenAPI document and the service's health, readiness
    and metrics addresses, linked from the home page, answer 200 to a plain request."""
    with httpx.Client(base_url=live.base_url, timeout=HTTP_TIMEOUT_S) as http:
        answers = {path: http.get(path).status_code for path in SERVICE_ADDRESSES}
    assert answers == dict.fromkeys(SERVICE_ADDRESSES, 200)
