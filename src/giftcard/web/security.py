"""What keeps the pages safe: the session cookie, CSRF tokens, signed one-time messages,
the pending redeem code, and the `next` address after logging in.

Cookies, each HttpOnly, SameSite=Lax, and Secure when the page is served over HTTPS:

- `giftcard_session` holds the shopper's session token (`gcs_…`, the same sessions the
  API hands out; the server keeps only its hash).
- `giftcard_staff` holds a staff member's session token, sent only to the support
  console (`/support`); it is never a shopper's session, nor the reverse. On console
  pages the CSRF token is bound to this session instead of the shopper's.
- `giftcard_csrf` holds a random value; every form carries, in its `csrf_token` field,
  a token signed with the secret key over that value and the session the page was
  rendered in, and a POST whose token does not match its cookies is refused (a signed
  double-submit token: another site can neither read the cookie nor forge the field).
  Binding the token to the session means a token obtained before logging in, or in
  another session, is refused once the browser holds a session: whoever could plant or
  read this browser's random cookie still cannot act in the session opened after it. A
  POST that comes with no session acts as nobody, so it takes any token signed for its
  cookie; that is what lets a form whose session ended meanwhile lead to logging in
  instead of an error. A POST whose `Origin` header names another site is refused as
  well.
- `giftcard_flash` carries a signed message to the page a form redirects to.
- `giftcard_redeem` carries the code of a redeem link (`/redeem?code=…`) through logging
  in or signing up, so that the code never travels in a URL the server sees again and
  is never written to a server-side row or log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Request
from starlette.datastructures import FormData
from starlette.responses import Response

from giftcard import customers
from giftcard.customers import CustomerPrincipal
from giftcard.http import services

SESSION_COOKIE = "giftcard_session"
STAFF_COOKIE = "giftcard_staff"
# The support console's pages, the only ones the staff cookie is sent to.
CONSOLE_PATH = "/support"
CSRF_COOKIE = "giftcard_csrf"
FLASH_COOKIE = "giftcard_flash"
REDEEM_COOKIE = "giftcard_redeem"
CSRF_FIELD = "csrf_token"
# Where a shopper goes after logging in, unless a page of this site asked for another.
ACCOUNT_PAGE = "/account/gift-cards"

# A redeem link's code waits this long for the shopper to log in or sign up.
PENDING_REDEEM_TTL_S = 3600
# Longer than any code, however typed; longer input is cut before it is kept.
PENDING_CODE_LENGTH_MAX = 64
NEXT_LENGTH_MAX = 200
FLASH_LENGTH_MAX = 1500
CSRF_COOKIE_TTL_S = 365 * 86400
# Enough of a keyed digest to tell sessions apart (132 bits), short enough for a form.
CSRF_SESSION_BINDING_LENGTH = 22
# A binding, a dot and a signature, with room to spare; longer input is refused unread.
CSRF_TOKEN_LENGTH_MAX = 100


class CsrfRejected(Exception):
    """A form arrived without a valid token for its cookie, or from another site."""


class LoginRequired(Exception):
    """The page needs a logged-in shopper; `next_path` is where to come back to."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(
    request: Request,
    response: Response,
    name: str,
    value: str,
    *,
    max_age_s: int | None,
    path: str = "/",
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age_s,
        path=path,
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )


def clear_cookie(request: Request, response: Response, name: str, *, path: str = "/") -> None:
    response.delete_cookie(name, path=path, httponly=True, samesite="lax", secure=is_https(request))


def _mac(key: bytes, purpose: str, value: str) -> str:
    digest = hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


# --- CSRF ---------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """The token forms on this page carry, bound to this browser's CSRF cookie and to its
    session; makes a CSRF cookie if the browser has none (the page's response sets it:
    see `finish`). The token is `<session binding>.<signature>`, the binding empty
    without a session."""
    seed = request.cookies.get(CSRF_COOKIE, "")
    if not _looks_random(seed):
        seed = getattr(request.state, "new_csrf_seed", None) or secrets.token_urlsafe(32)
        request.state.new_csrf_seed = seed
    binding = _session_binding(request)
    return binding + "." + _csrf_signature(request, seed, binding)


def is_console(request: Request) -> bool:
    path = request.url.path
    return path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/")


def _session_binding(request: Request) -> str:
    """A short keyed digest of the session cookie (the staff member's on console pages):
    names the session without revealing its token. Empty without a session."""
    session = request.cookies.get(STAFF_COOKIE if is_console(request) else SESSION_COOKIE, "")
    if not session:
        return ""
    return _mac(services(request).settings.secret_key, "csrf-session", session)[
        :CSRF_SESSION_BINDING_LENGTH
    ]


def _csrf_signature(request: Request, seed: str, binding: str) -> str:
    return _mac(services(request).settings.secret_key, "csrf", f"{seed}.{binding}")


def _looks_random(seed: str) -> bool:
    return 40 <= len(seed) <= 64 and seed.replace("-", "").replace("_", "").isalnum()


async def checked_form(request: Request) -> FormData:
    """The submitted form, once its CSRF token and origin are known to be this site's
    and its token to be this session's (see the module's docstring)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.url.netloc:
        raise CsrfRejected
    form = await request.form()
    seed = request.cookies.get(CSRF_COOKIE, "")
    sent = form.get(CSRF_FIELD)
    if not _looks_random(seed) or not isinstance(sent, str) or len(sent) > CSRF_TOKEN_LENGTH_MAX:
        raise CsrfRejected
    binding, dot, signature = sent.partition(".")
    if not dot:
        raise CsrfRejected
    expected = _csrf_signature(request, seed, binding)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise CsrfRejected
    current = _session_binding(request)
    if current and not hmac.compare_digest(binding.encode(), current.encode()):
        raise CsrfRejected
    return form


def text_field(form: FormData, name: str, *, length_max: int = 500) -> str:
    """A form field as text, cut to a bound: files and missing fields read as ''."""
    value = form.get(name)
    return value[:length_max] if isinstance(value, str) else ""


# --- the shopper's session ----------------------------------------------------------


async def current_shopper(request: Request) -> CustomerPrincipal | None:
    """The logged-in shopper, or None. A staff session is not a shopper's."""
    if hasattr(request.state, "shopper"):
        found: CustomerPrincipal | None = request.state.shopper
        return found
    token = request.cookies.get(SESSION_COOKIE, "")
    shopper = None
    if token:
        svc = services(request)
        who = await customers.authenticate(svc.db, token, clock=svc.clock)
        if isinstance(who, CustomerPrincipal):
            shopper = who
            request.state.actor = who.actor
    request.state.shopper = shopper
    return shopper


async def require_shopper(request: Request) -> CustomerPrincipal:
    shopper = await current_shopper(request)
    if shopper is None:
        raise LoginRequired(local_path(request))
    return shopper


def local_path(request: Request) -> str:
    """This request's path and query, to come back to after logging in."""
    path = request.url.path
    if request.url.query:
        path += "?" + request.url.query
    return path


def safe_next(candidate: str | None, default: str = ACCOUNT_PAGE) -> str:
    """A `next` address only ever leads to a page of this site."""
    if not candidate or len(candidate) > NEXT_LENGTH_MAX:
        return default
    parts = urlsplit(candidate)
    if (
        parts.scheme
        or parts.netloc
        or not candidate.startswith("/")
        or candidate.startswith("//")
        or "\\" in candidate
        or not candidate.isprintable()
    ):
        return default
    return candidate


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(safe_next(next_path), safe="/")


def start_session(request: Request, response: Response, token: str) -> None:
    ttl_s = services(request).settings.session_ttl_s
    set_cookie(request, response, SESSION_COOKIE, token, max_age_s=ttl_s)


# --- signed one-time messages -------------------------------------------------------


def set_flash(request: Request, response: Response, message: dict[str, Any]) -> None:
    body = base64.urlsafe_b64encode(json.dumps(message).encode()).decode().rstrip("=")
    if len(body) > FLASH_LENGTH_MAX:
        raise ValueError("flash message too long")
    signed = body + "." + _mac(services(request).settings.secret_key, "flash", body)
    set_cookie(request, response, FLASH_COOKIE, signed, max_age_s=300)


def take_flash(request: Request) -> dict[str, Any] | None:
    """The message a redirect left for this page; `finish` clears its cookie."""
    raw = request.cookies.get(FLASH_COOKIE, "")
    if not raw:
        return None
    request.state.clear_flash = True
    body, _, mac = raw.partition(".")
    expected = _mac(services(request).settings.secret_key, "flash", body)
    if len(raw) > FLASH_LENGTH_MAX + 64 or not hmac.compare_digest(mac, expected):
        return None
    try:
        message = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


# --- the redeem link's code ----------------------------------------------------------


def keep_pending_code(request: Request, response: Response, code: str) -> None:
    set_cookie(
        request,
        response,
        REDEEM_COOKIE,
        code[:PENDING_CODE_LENGTH_MAX],
        max_age_s=PENDING_REDEEM_TTL_S,
    )


def pending_code(request: Request) -> str | None:
    code = request.cookies.get(REDEEM_COOKIE, "")[:PENDING_CODE_LENGTH_MAX]
    return code if code.strip() else None


def finish(request: Request, response: Response) -> Response:
    """Set the cookies and headers every page response needs."""
    seed = getattr(request.state, "new_csrf_seed", None)
    if seed:
        set_cookie(request, response, CSRF_COOKIE, seed, max_age_s=CSRF_COOKIE_TTL_S)
    if getattr(request.state, "clear_flash", False) and FLASH_COOKIE not in _set_names(response):
        clear_cookie(request, response, FLASH_COOKIE)
    if getattr(request.state, "clear_pending_code", False):
        clear_cookie(request, response, REDEEM_COOKIE)
    # Pages show balances and may show a code being typed: never kept in caches.
    response.headers["Cache-Control"] = "no-store"
    return response


def _set_names(response: Response) -> set[str]:
    names = set()
    for key, value in response.raw_headers:
        if key == b"set-cookie":
            names.add(value.split(b"=", 1)[0].decode())
    return names
