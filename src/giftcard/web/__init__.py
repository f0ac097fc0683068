"""The web door: server-rendered pages for shoppers (and the demo store's, when asked for).

Pages work without JavaScript (forms, POST/redirect/GET); `static/app.js` only adds
conveniences. Errors on a page's address are pages too: a stale form, a missing page or
a failure on our side never shows a problem document or a stack trace to a shopper.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from giftcard.db.engine import is_database_unreachable
from giftcard.errors import GiftcardError
from giftcard.web import security
from giftcard.web.account import router as account_router
from giftcard.web.pages import router as pages_router
from giftcard.web.support import router as support_router
from giftcard.web.support import session as support_session
from giftcard.web.templating import error_headers, page, redirect

log = logging.getLogger(__name__)

# Addresses of the JSON API and the service: their errors stay problem documents.
_API_PREFIXES = (
    "/v1",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/redoc",
    "/problems/",
)


def is_page(request: Request) -> bool:
    path = request.url.path
    return not any(path == prefix or path.startswith(prefix) for prefix in _API_PREFIXES)


def _wants_html(request: Request) -> bool:
    return is_page(request) and "text/html" in request.headers.get("accept", "")


def _database_down_page(request: Request) -> Response:
    return error_page(
        request,
        503,
        "We could not reach our database",
        "It may be restarting. Nothing you did caused this; please try again in a moment.",
        headers={"Retry-After": "1"},
    )


def error_page(
    request: Request,
    status: int,
    heading: str,
    message: str,
    *,
    action_href: str | None = None,
    action_label: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    if security.is_console(request):
        return support_session.console_page(
            request,
            "support/error.html",
            "error",
            {
                "heading": heading,
                "message": message,
                "action_href": action_href,
                "action_label": action_label,
            },
            status=status,
            headers=headers,
        )
    return page(
        request,
        "error.html",
        {
            "heading": heading,
            "message": message,
            "action_href": action_href,
            "action_label": action_label,
        },
        status=status,
        headers=headers,
    )


def _referring_page(request: Request) -> str:
    """The page of this site the refused form was on, to go back to."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc != request.url.netloc:
        return "/"
    return security.safe_next(referer.path, default="/")


async def _delegate(handler: Any, request: Request, error: Exception) -> Response:
    """Answer with the handler that was in charge before the pages were installed."""
    answer = handler(request, error)
    if inspect.isawaitable(answer):
        answer = await answer
    response: Response = answer
    return response


def install(app: FastAPI, *, demo_store: bool = False) -> None:
    """Add the pages, their static files, and page-shaped answers to errors on pages;
    the demo store's pages too when `demo_store` (GIFTCARD_DEMO_STORE) is on. Call after
    the API's problem handlers are installed: those stay in charge of every API address
    and of clients that do not ask for HTML."""
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    app.include_router(pages_router)
    app.include_router(account_router)
    app.include_router(support_router)
    app.state.demo_store = demo_store
    if demo_store:
        # The demo store pays with a pretend card, so its pages exist only in a demo
        # (SPEC §7). This is the one place giftcard imports the demo package; without
        # the setting its routes are never added and /store is an unknown address.
        from giftcard.demo import pages as demo_pages

        app.include_router(demo_pages.router)

    api_http_handler = app.exception_handlers[StarletteHTTPException]
    api_giftcard_handler = app.exception_handlers[GiftcardError]
    api_unexpected_handler = app.exception_handlers[Exception]

    @app.exception_handler(security.CsrfRejected)
    async def _csrf(request: Request, _: security.CsrfRejected) -> Response:
        return error_page(
            request,
            403,
            "This form has expired",
            "For your safety, forms only work for a while after the page was opened, and "
            "only from this site. Nothing was changed. Go back, reload the page and try "
            "again.",
            action_href=_referring_page(request),
            action_label="Back to the form",
        )

    @app.exception_handler(security.LoginRequired)
    async def _login(request: Request, error: security.LoginRequired) -> Response:
        return redirect(request, security.login_url(error.next_path))

    @app.exception_handler(support_session.StaffLoginRequired)
    async def _staff_login(request: Request, error: support_session.StaffLoginRequired) -> Response:
        return redirect(request, support_session.login_url(error.next_path))

    @app.exception_handler(GiftcardError)
    async def _giftcard(request: Request, error: GiftcardError) -> Response:
        if not is_page(request):
            return await _delegate(api_giftcard_handler, request, error)
        if is_database_unreachable(error):
            return _database_down_page(request)
        return error_page(
            request,
            error.status,
            error.code.problem_title,
            error.detail,
            headers=error_headers(error),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> Response:
        if not _wants_html(request):
            return await _delegate(api_http_handler, request, error)
        if error.status_code == 404:
            return error_page(
                request,
                404,
                "Page not found",
                "There is no page at this address. Check it, or start from the home page.",
            )
        if error.status_code == 405:
            return error_page(
                request,
                405,
                "This page cannot do that",
                "This address does not answer this kind of request.",
                headers=dict(error.headers or {}),
            )
        return error_page(
            request, error.status_code, "Something is wrong with this request", str(error.detail)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        if not is_page(request):
            return await _delegate(api_unexpected_handler, request, error)
        if is_database_unreachable(error):
            log.warning(
                "the database did not answer",
                extra={"path": request.url.path, "error": type(error).__name__},
            )
            return _database_down_page(request)
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_page(
            request,
            500,
            "Something went wrong on our side",
            "Nothing you did caused this, and it has been logged. Please try again in a moment.",
        )
