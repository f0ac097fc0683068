"""Using the pages as a browser would, with httpx: read a form's hidden fields, sign up,
submit a form with its CSRF token. The client keeps the cookies between requests."""

from __future__ import annotations

import html
import re
import uuid
from itertools import count

import httpx

PASSWORD = "correct horse battery"

_numbers = count(1)


def hidden_value(page: str, name: str) -> str:
    """The value of the hidden input `name` on a page (the first one, if several)."""
    for tag in re.findall(r"<input\b[^>]*>", page):
        if re.search(rf'\bname="{re.escape(name)}"', tag):
            found = re.search(r'\bvalue="([^"]*)"', tag)
            if found:
                return html.unescape(found.group(1))
    raise AssertionError(f"no input named {name!r} on the page")


def text_of(page: str) -> str:
    """The page's words without tags, whitespace squeezed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def field_error(page: str, name: str) -> str | None:
    """The error shown beside field `name`, if any, checked to be tied to its input
    (`aria-describedby`) and to mark it invalid."""
    found = re.search(rf'<p class="error" id="{name}-error">(.*?)</p>', page, re.S)
    if found is None:
        return None
    wiring = re.search(rf'<input id="{name}"[^>]*>', page)
    assert wiring, f"no input {name}"
    assert f"{name}-error" in wiring.group(0), "the error is not tied to its input"
    assert 'aria-invalid="true"' in wiring.group(0)
    return text_of(found.group(1)).removeprefix("Error:").strip()


def csrf_of(page: str) -> str:
    """The CSRF token a page's forms carry."""
    return hidden_value(page, "csrf_token")


async def csrf(client: httpx.AsyncClient, path: str = "/login") -> str:
    """A CSRF token for this client's cookie, read from a page that always has a form:
    the log-in page, or Your Gift Cards where it sends a logged-in shopper."""
    response = await client.get(path, follow_redirects=True)
    assert response.status_code == 200, response.text
    return csrf_of(response.text)


async def web_post(
    client: httpx.AsyncClient, action: str, data: dict[str, str] | None = None
) -> httpx.Response:
    """Submit a form to `action` with this client's CSRF token; redirects not followed."""
    return await client.post(action, data={**(data or {}), "csrf_token": await csrf(client)})


async def web_sign_up(client: httpx.AsyncClient, region: str = "US") -> str:
    """Create an account through the sign-up page and stay logged in; returns its email."""
    email = f"web{next(_numbers)}-{uuid.uuid4().hex[:6]}@example.com"
    form = await client.get("/signup")
    assert form.status_code == 200, form.text
    response = await client.post(
        "/signup",
        data={
            "csrf_token": csrf_of(form.text),
            "email": email,
            "password": PASSWORD,
            "region": region,
            "name": "",
        },
    )
    assert response.status_code == 303, response.text
    return email


async def web_redeem(client: httpx.AsyncClient, code: str) -> httpx.Response:
    """Redeem a code on Your Gift Cards; a 303 means it was added to the balance."""
    return await web_post(client, "/account/gift-cards/redeem", {"code": code})


STAFF_PASSWORD = "staff password 123"


async def console_log_in(client: httpx.AsyncClient, services: object, role: str = "support") -> str:
    """Create a staff member with `role` and log this client in to the support console;
    returns their email."""
    from giftcard.customers import Role, create_staff
    from giftcard.services import Services

    assert isinstance(services, Services)
    email = f"agent{next(_numbers)}-{uuid.uuid4().hex[:6]}@staff.example.com"
    await create_staff(
        services.db, email=email, password=STAFF_PASSWORD, role=Role(role), clock=services.clock
    )
    form = await client.get("/support/login")
    response = await client.post(
        "/support/login",
        data={"csrf_token": csrf_of(form.text), "email": email, "password": STAFF_PASSWORD},
    )
    assert response.status_code == 303, response.text
    return email


async def console_post(
    client: httpx.AsyncClient, action: str, data: dict[str, str] | None = None
) -> httpx.Response:
    """Submit a console form with this client's console CSRF token; no redirects followed."""
    return await client.post(
        action, data={**(data or {}), "csrf_token": await csrf(client, "/support")}
    )
