"""Logging in to and out of the support console, and its home page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from giftcard import customers
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.http import client_address, services
from giftcard.passwords import PASSWORD_LENGTH_MAX
from giftcard.web.security import checked_form, text_field
from giftcard.web.support import session
from giftcard.web.support.session import HOME, console_page, current_staff, require_staff
from giftcard.web.templating import error_headers, redirect

router = APIRouter(prefix=HOME, include_in_schema=False)


@router.get("", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    await require_staff(request)
    return console_page(request, "support/home.html", "lookup")


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None) -> Response:
    if await current_staff(request):
        return redirect(request, session.safe_next(next))
    return console_page(request, "support/login.html", "login", {"next": session.safe_next(next)})


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await checked_form(request)
    next_path = session.safe_next(text_field(form, "next"))
    email = text_field(form, "email", length_max=customers.EMAIL_LENGTH_MAX + 50)
    password = text_field(form, "password", length_max=PASSWORD_LENGTH_MAX + 1)
    svc = services(request)
    try:
        opened = await customers.log_in_limited(
            svc.db,
            svc.limits,
            email=email,
            password=password,
            address=client_address(request),
            ttl_s=svc.settings.session_ttl_s,
            clock=svc.clock,
        )
        if opened.staff is None:
            # A shopper's account: the session just made for it is closed again at once.
            await customers.log_out(svc.db, opened.session_id, clock=svc.clock)
            raise GiftcardError(
                ErrorCode.FORBIDDEN,
                "This is a shopper's account. The support console is for staff; shoppers "
                "log in at /login.",
                param="email",
            )
    except GiftcardError as error:
        return console_page(
            request,
            "support/login.html",
            "login",
            {
                "next": next_path,
                "values": {"email": email},
                "errors": {error.param or "email": error.detail},
            },
            status=error.status,
            headers=error_headers(error),
        )
    response = redirect(request, next_path)
    session.start_session(request, response, opened.token)
    return response


@router.post("/logout", response_class=HTMLResponse)
async def logout(request: Request) -> Response:
    await checked_form(request)
    staff = await current_staff(request)
    if staff is not None:
        svc = services(request)
        await customers.log_out(svc.db, staff.session_id, clock=svc.clock)
    request.state.staff = None
    response = redirect(
        request,
        session.LOGIN,
        flash={"level": "info", "title": "You are logged out of the support console.", "text": ""},
    )
    session.end_session(request, response)
    return response
