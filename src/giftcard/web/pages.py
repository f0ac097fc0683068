"""The public pages: home, sign up, log in, log out, and the redeem link of gift emails.

Forms follow POST/redirect/GET: a valid form ends in a 303 redirect; an invalid one is
shown again with what was typed (never the password) and each error beside its field.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from giftcard import customers
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.http import client_address, services
from giftcard.money import REGIONS
from giftcard.passwords import PASSWORD_LENGTH_MAX, PASSWORD_LENGTH_MIN
from giftcard.web import security
from giftcard.web.security import ACCOUNT_PAGE, checked_form, current_shopper, safe_next, text_field
from giftcard.web.templating import error_headers, page, redirect

router = APIRouter(include_in_schema=False)


def _links(next_path: str) -> dict[str, str]:
    """Sign-up and log-in links that keep where the shopper was going."""
    if next_path == ACCOUNT_PAGE:
        return {"login_href": "/login", "signup_href": "/signup"}
    query = "?next=" + quote(next_path, safe="/")
    return {"login_href": "/login" + query, "signup_href": "/signup" + query}


def _form_context(request: Request, next_path: str) -> dict[str, object]:
    return {
        "next": next_path,
        "redeeming": security.pending_code(request) is not None,
        **_links(next_path),
    }


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    await current_shopper(request)
    return page(request, "home.html")


@router.get("/signup", response_class=HTMLResponse)
async def signup_form(request: Request, next: str | None = None) -> Response:
    if await current_shopper(request):
        return redirect(request, safe_next(next))
    return _signup_page(request, safe_next(next))


def _signup_page(
    request: Request,
    next_path: str,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    return page(
        request,
        "signup.html",
        {
            **_form_context(request, next_path),
            "regions": list(REGIONS.values()),
            "password_min": PASSWORD_LENGTH_MIN,
            "values": values or {},
            "errors": errors or {},
        },
        status=status,
        headers=headers,
    )


@router.post("/signup", response_class=HTMLResponse)
async def signup(request: Request) -> Response:
    form = await checked_form(request)
    next_path = safe_next(text_field(form, "next"))
    values = {
        "email": text_field(form, "email", length_max=customers.EMAIL_LENGTH_MAX + 50),
        "name": text_field(form, "name", length_max=customers.NAME_LENGTH_MAX + 50),
        "region": text_field(form, "region", length_max=10),
    }
    password = text_field(form, "password", length_max=PASSWORD_LENGTH_MAX + 1)
    svc = services(request)
    try:
        await svc.limits.signup_attempt(client_address(request))
        created = await customers.sign_up(
            svc.db,
            email=values["email"],
            password=password,
            region=values["region"],
            name=values["name"] or None,
            clock=svc.clock,
        )
    except GiftcardError as error:
        return _signup_page(
            request,
            next_path,
            values=values,
            errors={error.param or "email": error.detail},
            status=error.status,
            headers=error_headers(error),
        )
    session = await customers.open_customer_session(
        svc.db, created, ttl_s=svc.settings.session_ttl_s, clock=svc.clock
    )
    response = redirect(
        request,
        next_path,
        flash={"level": "success", "title": "Your account is ready.", "text": ""},
    )
    security.start_session(request, response, session.token)
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None) -> Response:
    if await current_shopper(request):
        return redirect(request, safe_next(next))
    return page(request, "login.html", _form_context(request, safe_next(next)))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await checked_form(request)
    next_path = safe_next(text_field(form, "next"))
    email = text_field(form, "email", length_max=customers.EMAIL_LENGTH_MAX + 50)
    password = text_field(form, "password", length_max=PASSWORD_LENGTH_MAX + 1)
    svc = services(request)
    try:
        session = await customers.log_in_limited(
            svc.db,
            svc.limits,
            email=email,
            password=password,
            address=client_address(request),
            ttl_s=svc.settings.session_ttl_s,
            clock=svc.clock,
        )
        if session.customer is None:
            # These pages are a shopper's; staff use the API. The session just made for
            # the staff member is closed again at once.
            assert session.staff is not None
            await customers.log_out(svc.db, session.staff.session_id, clock=svc.clock)
            raise GiftcardError(
                ErrorCode.FORBIDDEN,
                "This is a staff account. Log in here with a shopper's account.",
                param="email",
            )
    except GiftcardError as error:
        return page(
            request,
            "login.html",
            {
                **_form_context(request, next_path),
                "values": {"email": email},
                "errors": {error.param or "email": error.detail},
            },
            status=error.status,
            headers=error_headers(error),
        )
    response = redirect(request, next_path)
    security.start_session(request, response, session.token)
    return response


@router.post("/logout", response_class=HTMLResponse)
async def logout(request: Request) -> Response:
    await checked_form(request)
    shopper = await current_shopper(request)
    if shopper is not None:
        svc = services(request)
        await customers.log_out(svc.db, shopper.session_id, clock=svc.clock)
    request.state.shopper = None
    response = redirect(
        request, "/", flash={"level": "info", "title": "You are logged out.", "text": ""}
    )
    security.clear_cookie(request, response, security.SESSION_COOKIE)
    return response


@router.get("/redeem", response_class=HTMLResponse)
async def redeem_link(request: Request, code: str | None = None) -> Response:
    """The link in a gift email. The code moves into a short-lived cookie and the browser
    goes on to a URL without it: the code is not in the address bar, in later requests'
    URLs or Referer headers, in the access log or in any row the server writes."""
    response = redirect(request, ACCOUNT_PAGE + "#redeem")
    if code and code.strip():
        security.keep_pending_code(request, response, code.strip())
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
