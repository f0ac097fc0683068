"""Rendering pages: the Jinja environment, its filters, and the one `page` helper every
page goes through (CSRF token, the shopper, the flash message, security headers)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from giftcard import ids
from giftcard.customers import CustomerPrincipal
from giftcard.errors import ErrorCode, GiftcardError, TooManyAttempts
from giftcard.money import REGIONS, format_minor
from giftcard.web import security

TEMPLATES_FOLDER = Path(__file__).parent / "templates"


def make_templates(*folders: Path) -> Jinja2Templates:
    """Templates looked up in `folders` first, then among the site's own, so that pages
    kept elsewhere (the demo store's) extend the site's `base.html` and its macros."""
    # StrictUndefined: a name missing from a page's context is an error in the tests, not
    # an empty string on the page (a form without its CSRF token, say).
    env = Environment(
        loader=FileSystemLoader([*folders, TEMPLATES_FOLDER]),
        autoescape=True,
        undefined=StrictUndefined,
    )
    # A row's public id, as the API names it: `format_id("card", card.id)`.
    env.globals["format_id"] = ids.format_id
    return Jinja2Templates(env=env)


templates = make_templates()

# Pages load only this site's own scripts and styles; no page may be framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


# The clock each store's pages show times in, named beside every time shown. A visitor
# who is not logged in (and staff) see UTC, labelled too.
STORE_TIME_ZONES = {
    "US": "America/New_York",
    "GB": "Europe/London",
    "DE": "Europe/Berlin",
    "FR": "Europe/Paris",
    "JP": "Asia/Tokyo",
    "CA": "America/Toronto",
    "AU": "Australia/Sydney",
    "IN": "Asia/Kolkata",
}
if STORE_TIME_ZONES.keys() != REGIONS.keys():
    raise RuntimeError("every store needs the time zone its pages show times in")


def error_headers(error: GiftcardError) -> dict[str, str] | None:
    """Headers a page refusing with `error` sends: Retry-After when locked out, or when
    the service is unavailable for a moment."""
    if isinstance(error, TooManyAttempts):
        return {"Retry-After": str(error.retry_after_s)}
    if error.code is ErrorCode.SERVICE_UNAVAILABLE:
        return {"Retry-After": "1"}
    return None


def error_words(error: GiftcardError) -> str:
    """What a page says beside a field refused with `error`: a lock-out also says how
    long it lasts, from the same Retry-After the page sends."""
    if isinstance(error, TooManyAttempts):
        # "Please wait before trying again" says less than the wait itself: it gives way.
        detail = _VAGUE_WAIT.sub("", error.detail)
        return f"{detail} Try again in {wait_words(error.retry_after_s)}."
    return error.detail


_VAGUE_WAIT = re.compile(r"\s*Please (?:wait before trying again|try later)\.$")


def wait_words(seconds: int) -> str:
    """A wait for people, rounded up: "45 seconds", "12 minutes", "2 hours"."""
    if seconds < 60:
        return _plural(max(1, seconds), "second")
    minutes = math.ceil(seconds / 60)
    if minutes <= 90:
        return _plural(minutes, "minute")
    return _plural(math.ceil(minutes / 60), "hour")


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def when_for(shopper: CustomerPrincipal | None) -> Callable[[datetime], str]:
    """Formats a moment in this shopper's store's time zone, named ("Dec 2, 2026, 9:05 AM
    EST", "02.12.2026, 14:05 CET"); UTC, named, for everyone else."""
    locale = _locale(shopper)
    zone = ZoneInfo(STORE_TIME_ZONES[shopper.customer.region]) if shopper is not None else UTC

    def when(moment: datetime) -> str:
        local = moment.astimezone(zone)
        day = format_date(local, format="medium", locale=locale)
        time = format_time(local, format="short", locale=locale)
        return f"{day}, {time} {local.tzname()}"

    return when


def money_for(shopper: CustomerPrincipal | None) -> Callable[[int, str], str]:
    """Formats money the way this shopper's store writes it (`$25.00`, `25,00 €`); a
    visitor who is not logged in sees the US store's way."""
    locale = _locale(shopper)
    return lambda amount_minor, currency: format_minor(amount_minor, currency, locale)


def _locale(shopper: CustomerPrincipal | None) -> str:
    return REGIONS[shopper.customer.region].locale if shopper is not None else "en_US"


def page(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    renderer: Jinja2Templates = templates,
) -> HTMLResponse:
    """Render `template` (one of `renderer`'s) for this request as a complete page."""
    shopper: CustomerPrincipal | None = getattr(request.state, "shopper", None)
    full = {
        "shopper": shopper,
        "csrf_token": security.csrf_token(request),
        "csrf_field": security.CSRF_FIELD,
        "flash": security.take_flash(request),
        "money": money_for(shopper),
        "when": when_for(shopper),
        "errors": {},
        "values": {},
        # Links to the demo store appear only where it is served.
        "demo_store": bool(getattr(request.app.state, "demo_store", False)),
        **(context or {}),
    }
    response = renderer.TemplateResponse(
        request, template, full, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})}
    )
    security.finish(request, response)
    return response


def redirect(
    request: Request, location: str, *, flash: dict[str, Any] | None = None
) -> RedirectResponse:
    """303 See Other after a form: the browser then GETs `location` (POST/redirect/GET)."""
    response = RedirectResponse(location, status_code=303)
    if flash is not None:
        security.set_flash(request, response, flash)
    security.finish(request, response)
    return response
