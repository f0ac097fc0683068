"""What every console page shares: the staff member's session (its own cookie, sent only
to /support), the actor the audit log names, and the one helper that renders a page."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.responses import Response

from giftcard import audit, customers
from giftcard.customers import StaffPrincipal
from giftcard.http import services
from giftcard.money import format_minor
from giftcard.web import security
from giftcard.web.templating import make_templates, page

HOME = security.CONSOLE_PATH
LOGIN = HOME + "/login"

templates = make_templates(Path(__file__).parent / "templates")


class StaffLoginRequired(Exception):
    """The console page needs a logged-in staff member; `next_path` is where to return."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


async def current_staff(request: Request) -> StaffPrincipal | None:
    """The logged-in staff member (enabled, session live), or None."""
    if hasattr(request.state, "staff"):
        found: StaffPrincipal | None = request.state.staff
        return found
    token = request.cookies.get(security.STAFF_COOKIE, "")
    staff = None
    if token:
        svc = services(request)
        who = await customers.authenticate(svc.db, token, clock=svc.clock)
        if isinstance(who, StaffPrincipal):
            staff = who
            request.state.actor = who.actor
    request.state.staff = staff
    return staff


async def require_staff(request: Request) -> StaffPrincipal:
    staff = await current_staff(request)
    if staff is None:
        raise StaffLoginRequired(security.local_path(request))
    return staff


def actor(request: Request, staff: StaffPrincipal) -> audit.Actor:
    """The staff member as the audit log names them, with this request's id."""
    return audit.Actor(staff.actor, staff.role.value, getattr(request.state, "request_id", None))


def safe_next(candidate: str | None) -> str:
    """A `next` address after logging in: a console page, or the console's home."""
    path = security.safe_next(candidate, default=HOME)
    where = urlsplit(path).path
    return path if where == HOME or where.startswith(HOME + "/") else HOME


def login_url(next_path: str) -> str:
    if next_path == HOME:
        return LOGIN
    return LOGIN + "?next=" + quote(safe_next(next_path), safe="/")


def start_session(request: Request, response: Response, token: str) -> None:
    ttl_s = services(request).settings.session_ttl_s
    security.set_cookie(request, response, security.STAFF_COOKIE, token, max_age_s=ttl_s, path=HOME)


def end_session(request: Request, response: Response) -> None:
    security.clear_cookie(request, response, security.STAFF_COOKIE, path=HOME)


def money(amount_minor: int, currency: str) -> str:
    """Money as its own store writes it (`$25.00`, `25,00 €`)."""
    return format_minor(amount_minor, currency)


def when(moment: datetime | None) -> str:
    """A moment as staff read it, whatever their own zone: `2026-12-02 14:05:09 UTC`."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def console_page(
    request: Request,
    template: str,
    section: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """A console page. `section` marks the current item of the console's navigation."""
    full = {
        "staff": getattr(request.state, "staff", None),
        "section": section,
        "money": money,
        "when": when,
        **(context or {}),
    }
    return page(request, template, full, status=status, headers=headers, renderer=templates)
