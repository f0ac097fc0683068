"""The API's documentation pages in Chromium, with every address but the server's own
cut off: each UI renders the API from what this server serves, under its
Content-Security-Policy, with no refusal in the console but the one expected below."""

from __future__ import annotations

from playwright.sync_api import Browser, ConsoleMessage, Route

from tests.browser.browsing import Live

# ReDoc's sidebar always tries to show Redocly's logo from Redocly's CDN and hides the
# image when it does not load; the page's policy refuses it before any request is made.
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
RENDER_TIMEOUT_MS = 30_000


def _open_offline(
    browser: Browser, live: Live, path: str, ready: tuple[str, str]
) -> tuple[list[str], list[str]]:
    """Open `path` with the network limited to the server; wait until an element
    `ready[0]` with the text `ready[1]` shows.
    Returns the console errors and the requests that tried to leave the server."""
    context = browser.new_context(base_url=live.base_url, service_workers="block")
    errors: list[str] = []
    outside: list[str] = []

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(live.base_url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    try:
        page = context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.route("**/*", only_the_server)
        response = page.goto(path)
        assert response is not None
        assert response.status == 200
        page.locator(ready[0], has_text=ready[1]).first.wait_for(timeout=RENDER_TIMEOUT_MS)
        page.wait_for_load_state("networkidle")
    finally:
        context.close()
    return errors, outside


def test_swagger_ui_renders_offline_under_its_policy(browser: Browser, live: Live) -> None:
    """/docs shows the API's operations, nothing is refused, nothing leaves the server."""
    errors, outside = _open_offline(
        browser, live, "/docs", (".opblock-summary-path", "/v1/me/balance")
    )

    assert outside == []
    assert errors == []


def test_redoc_renders_offline_under_its_policy(browser: Browser, live: Live) -> None:
    """/redoc shows the API's operations; the only refusal is Redocly's logo, which the
    policy stops before any request leaves the browser."""
    errors, outside = _open_offline(browser, live, "/redoc", ("h2", "The gift card balance"))

    assert outside == []
    unexpected = [error for error in errors if REDOCLY_LOGO not in error]
    assert unexpected == []
