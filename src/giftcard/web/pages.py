"""The public pages: home, sign up, log in, log out, the redeem link of gift emails, and
"Forgot your password?" with the reset link's page.

Forms follow POST/redirect/GET: a valid form ends in a 303 redirect; an invalid one is
shown again with what was typed (never the password) and each error beside its field.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from giftcard import account_mail, customers
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.http import client_address, services
from giftcard.money import REGIONS
from giftcard.money import region as find_region
from giftcard.passwords import PASSWORD_LENGTH_MAX, PASSWORD_LENGTH_MIN
from giftcard.web import security
from giftcard.web.security import ACCOUNT_PAGE, checked_form, current_shopper, safe_next, text_field
from giftcard.web.templating import error_headers, error_words, page, redirect

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
        problems = _sign_up_problems(values, password)
        if problems:
            return _signup_page(request, next_path, values=values, errors=problems, status=422)
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
            errors={error.param or "email": error_words(error)},
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


def _sign_up_problems(values: dict[str, str], password: str) -> dict[str, str]:
    """Every field's problem at once, in the form's order, checked by the same rules
    `customers.sign_up` applies; a taken email can only be told by trying."""
    checks: dict[str, Callable[[], object]] = {
        "email": lambda: customers.normalize_email(values["email"]),
        "password": lambda: customers.check_password(password),
        "name": lambda: customers.check_name(values["name"] or None),
        "region": lambda: find_region(values["region"]),
    }
    problems: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
        except GiftcardError as error:
            problems[name] = error.detail
    return problems


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
            # These pages are a shopper's; staff use the support console. The session
            # just made for the staff member is closed again at once.
            await customers.log_out(svc.db, session.session_id, clock=svc.clock)
            raise GiftcardError(
                ErrorCode.FORBIDDEN,
                "This is a staff account: staff log in to the support console at "
                "/support/login. Log in here with a shopper's account.",
                param="email",
            )
    except GiftcardError as error:
        return page(
            request,
            "login.html",
            {
                **_form_context(request, next_path),
                "values": {"email": email},
                "errors": {error.param or "email": error_words(error)},
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


# --- "Forgot your password?" ----------------------------------------------------------

# The reset link's token waits here between the link and the form (as a redeem link's
# code does in `giftcard_redeem`): never in a URL the server sees after the first one.
RESET_COOKIE = "giftcard_reset"
RESET_COOKIE_TTL_S = int(account_mail.RESET_TTL.total_seconds())


@router.get(account_mail.FORGOT_PASSWORD_PATH, response_class=HTMLResponse)
async def forgot_password_form(request: Request) -> Response:
    await current_shopper(request)
    return page(request, "forgot_password.html")


@router.post(account_mail.FORGOT_PASSWORD_PATH, response_class=HTMLResponse)
async def forgot_password(request: Request) -> Response:
    form = await checked_form(request)
    email = text_field(form, "email", length_max=customers.EMAIL_LENGTH_MAX + 50)
    svc = services(request)
    try:
        await account_mail.request_password_reset_limited(
            svc.unit_of_work(),
            svc.limits,
            email=email,
            address=client_address(request),
            secret_key=svc.settings.secret_key,
        )
    except GiftcardError as error:
        return page(
            request,
            "forgot_password.html",
            {"values": {"email": email}, "errors": {"email": error_words(error)}},
            status=error.status,
            headers=error_headers(error),
        )
    return redirect(request, account_mail.FORGOT_PASSWORD_PATH + "/sent")


@router.get(account_mail.FORGOT_PASSWORD_PATH + "/sent", response_class=HTMLResponse)
async def forgot_password_sent(request: Request) -> Response:
    await current_shopper(request)
    return page(request, "forgot_password_sent.html")


@router.get(account_mail.PASSWORD_RESET_PATH, response_class=HTMLResponse)
async def password_reset_form(request: Request, token: str | None = None) -> Response:
    """The link in a reset email. The token moves into a short-lived cookie and the
    browser goes on to this page without it; then the form, if the link can be used."""
    if token is not None:
        response = redirect(request, account_mail.PASSWORD_RESET_PATH)
        security.set_cookie(
            request,
            response,
            RESET_COOKIE,
            token[: account_mail.TOKEN_LENGTH + 1],
            max_age_s=RESET_COOKIE_TTL_S,
        )
        response.headers["Referrer-Policy"] = "no-referrer"
        return response
    await current_shopper(request)
    svc = services(request)
    try:
        await account_mail.check_reset_link(
            svc.db,
            token=_reset_token(request),
            secret_key=svc.settings.secret_key,
            clock=svc.clock,
        )
    except GiftcardError:
        return _unusable_link_page(request)
    return _reset_page(request)


@router.post(account_mail.PASSWORD_RESET_PATH, response_class=HTMLResponse)
async def password_reset(request: Request) -> Response:
    form = await checked_form(request)
    password = text_field(form, "password", length_max=PASSWORD_LENGTH_MAX + 1)
    confirmation = text_field(form, "confirm_password", length_max=PASSWORD_LENGTH_MAX + 1)
    if password != confirmation:
        return _reset_page(
            request,
            errors={"confirm_password": "The two passwords differ. Type the same one twice."},
            status=422,
        )
    svc = services(request)
    try:
        await account_mail.reset_password(
            svc.unit_of_work(),
            token=_reset_token(request),
            password=password,
            secret_key=svc.settings.secret_key,
        )
    except GiftcardError as error:
        if error.param == "password":
            return _reset_page(request, errors={"password": error.detail}, status=error.status)
        return _unusable_link_page(request)
    request.state.shopper = None
    response = redirect(
        request,
        "/login",
        flash={
            "level": "success",
            "title": "Your password is changed.",
            "text": "Log in with your new password. Every device that was logged in to your "
            "account has been logged out.",
        },
    )
    security.clear_cookie(request, response, RESET_COOKIE)
    security.clear_cookie(request, response, security.SESSION_COOKIE)
    return response


def _reset_token(request: Request) -> str:
    return request.cookies.get(RESET_COOKIE, "")[: account_mail.TOKEN_LENGTH + 1]


def _reset_page(
    request: Request, *, errors: dict[str, str] | None = None, status: int = 200
) -> Response:
    return page(
        request,
        "password_reset.html",
        {"password_min": PASSWORD_LENGTH_MIN, "errors": errors or {}},
        status=status,
    )


def _unusable_link_page(request: Request) -> Response:
    response = page(request, "password_reset_unusable.html", status=410)
    security.clear_cookie(request, response, RESET_COOKIE)
    return response
