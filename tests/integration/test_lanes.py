"""The lanes (giftcard.api.lanes) answer their routes' plain case exactly as the routes
would, and leave every other case to the routes: each request below is sent to the app
and to the same app without its lanes, on one database, and the two answers compared."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from giftcard.api import routes_customers, routes_payments
from giftcard.api.app import create_app
from giftcard.api.deps import customer
from giftcard.api.lanes import Lane, Lanes, route_of
from giftcard.api.schemas import BalanceOut
from giftcard.config import Settings
from giftcard.services import Services
from tests.conftest import Shopper, api_key, issue, sign_up, staff_member

KEY_LENGTH_OVER = "k" * 256
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Many refusals on purpose: each judged on its content, not as one too many.
    return replace(
        settings,
        limit_redeem_failures_account="10000/15minutes",
        limit_redeem_failures_address="10000/15minutes",
        limit_redeem_misses_service="10000/15minutes",
    )


@pytest.fixture
async def bare(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """The same app on the same services, without its lanes: FastAPI's routes alone."""
    app = create_app(services=services)
    app.user_middleware = [entry for entry in app.user_middleware if entry.cls is not Lanes]
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4711))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@dataclass
class Caller:
    """What one of the two apps' requests are made with: its own shopper (with a balance
    of 50.00 to start with), its own code, unredeemed before each case, so that both apps
    can succeed, and its own keys and staff session."""

    shopper: Shopper
    admin: dict[str, str]
    merchant: dict[str, str]
    staff: dict[str, str]
    code: str = ""


async def caller(client: httpx.AsyncClient, services: Services) -> Caller:
    admin = await api_key(services, "admin")
    shopper = await sign_up(client)
    (card,) = await issue(client, admin, amount=5000)
    redeemed = await client.post(
        "/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth
    )
    assert redeemed.status_code == 201, redeemed.text
    staff = await staff_member(client, services, "support")
    return Caller(shopper, admin, await api_key(services, "merchant"), staff.auth)


async def with_new_code(client: httpx.AsyncClient, who: Caller) -> Caller:
    (card,) = await issue(client, who.admin, amount=2500)
    who.code = card["code"]
    return who


JSON = {"Content-Type": "application/json"}
Request = Callable[[Caller], tuple[dict[str, str], bytes]]


def redemption(
    content: Callable[[Caller], Any] | bytes,
    *,
    auth: str = "shopper",
    headers: dict[str, str] | None = None,
) -> Request:
    def make(who: Caller) -> tuple[dict[str, str], bytes]:
        sent = {**JSON, **(headers or {}), **authorization(who, auth)}
        # An empty Content-Type is left out (no content type); an empty key is sent.
        sent = {name: value for name, value in sent.items() if value or name != "Content-Type"}
        raw = content if isinstance(content, bytes) else json.dumps(content(who)).encode()
        return sent, raw

    return make


def authorization(who: Caller, auth: str) -> dict[str, str]:
    return {
        "shopper": who.shopper.auth,
        "merchant": who.merchant,
        "staff": who.staff,
        "junk": {"Authorization": "Bearer not-a-token"},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
        "none": {},
    }[auth]


REDEMPTIONS: dict[str, Request] = {
    "plain": redemption(lambda who: {"code": who.code}),
    "charset": redemption(
        lambda who: {"code": who.code},
        headers={"Content-Type": "application/json; charset=utf-8"},
    ),
    "media type in capitals": redemption(
        lambda who: {"code": who.code}, headers={"Content-Type": "Application/JSON"}
    ),
    "with a key": redemption(
        lambda who: {"code": who.code}, headers={"Idempotency-Key": "lane-key-1"}
    ),
    "unknown code": redemption(lambda who: {"code": "7KQ4-M2ZP-X9CD-R3TW"}),
    "code with a wrong check symbol": redemption(lambda who: {"code": "7KQ4-M2ZP-X9CD-R3TX"}),
    "code that is not one": redemption(lambda who: {"code": "hello"}),
    "no authorization": redemption(lambda who: {"code": who.code}, auth="none"),
    "unknown token": redemption(lambda who: {"code": who.code}, auth="junk"),
    "basic authorization": redemption(lambda who: {"code": who.code}, auth="basic"),
    "an API key": redemption(lambda who: {"code": who.code}, auth="merchant"),
    "a staff session": redemption(lambda who: {"code": who.code}, auth="staff"),
    "no authorization, bad body": redemption(b"{", auth="none"),
    "text/plain": redemption(
        lambda who: {"code": who.code}, headers={"Content-Type": "text/plain"}
    ),
    "no content type": redemption(lambda who: {"code": who.code}, headers={"Content-Type": ""}),
    "not JSON": redemption(b'{"code": '),
    "not UTF-8": redemption(b'{"code": "\xff\xfe"}'),
    "nested too deep": redemption(DEEP),
    "an array": redemption(lambda who: [who.code]),
    "no code": redemption(lambda who: {}),
    "code as a number": redemption(lambda who: {"code": 1234}),
    "code too long": redemption(lambda who: {"code": "A" * 257}),
    "an extra field": redemption(lambda who: {"code": who.code, "amount": 1}),
    "empty body": redemption(b""),
    "null": redemption(b"null"),
    "key too long": redemption(
        lambda who: {"code": who.code}, headers={"Idempotency-Key": KEY_LENGTH_OVER}
    ),
    "empty key": redemption(lambda who: {"code": who.code}, headers={"Idempotency-Key": ""}),
    "key not printable": redemption(
        lambda who: {"code": who.code}, headers={"Idempotency-Key": "tab\there"}
    ),
    "body too large": redemption(lambda who: {"code": "A" * 100_000}),
}


def payment(
    content: Callable[[Caller], Any] | bytes,
    *,
    auth: str = "merchant",
    headers: dict[str, str] | None = None,
) -> Request:
    return redemption(content, auth=auth, headers=headers)


def order(who: Caller, **changes: Any) -> dict[str, Any]:
    return {
        "customer_id": who.shopper.id,
        "order_id": "order-1",
        "amount": 1000,
        "currency": "USD",
        "capture": True,
        **changes,
    }


PAYMENTS: dict[str, Request] = {
    "plain": payment(order),
    "authorized only": payment(lambda who: order(who, capture=False, order_id="order-2")),
    "with a key": payment(order, headers={"Idempotency-Key": "lane-key-2"}),
    "more than the balance": payment(lambda who: order(who, amount=10_000, use_balance=10_000)),
    "unknown customer": payment(lambda who: order(who, customer_id="cus_7qnwnh0ssvgr2")),
    "malformed customer id": payment(lambda who: order(who, customer_id="nobody")),
    "another currency": payment(lambda who: order(who, currency="EUR")),
    "negative amount": payment(lambda who: order(who, amount=-1)),
    "amount as text": payment(lambda who: order(who, amount="10.00")),
    "no order id": payment(lambda who: {k: v for k, v in order(who).items() if k != "order_id"}),
    "a shopper's session": payment(order, auth="shopper"),
    "a support session": payment(order, auth="staff"),
    "no authorization": payment(order, auth="none"),
    "text/plain": payment(order, headers={"Content-Type": "text/plain"}),
    "not JSON": payment(b"{"),
    "key too long": payment(order, headers={"Idempotency-Key": KEY_LENGTH_OVER}),
}


# Values that differ between two answers that are the same: the ids of what each made,
# and the card each redeemed.
VOLATILE = ("id", "transaction_id", "customer_id", "request_id", "serial", "last4")


def normalized(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: "<id>" if key in VOLATILE else normalized(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalized(item) for item in value]
    return value


def answer(response: httpx.Response) -> dict[str, Any]:
    try:
        content: Any = normalized(response.json())
    except ValueError:
        content = response.text
    return {
        "status": response.status_code,
        "content-type": response.headers.get("content-type"),
        "cache-control": response.headers.get("cache-control"),
        "retry-after": response.headers.get("retry-after"),
        "idempotent-replayed": response.headers.get("idempotent-replayed"),
        "request-id": response.headers.get("request-id", "")[:4],
        "body": content,
    }


async def compare(
    client: httpx.AsyncClient,
    bare: httpx.AsyncClient,
    services: Services,
    path: str,
    cases: dict[str, Request],
) -> None:
    """Send each case's request twice (a retry, or a replay when it has a key) through
    each app, as that app's own caller, and compare the answers. The two callers go
    through the same cases in the same order, so their balances stay alike."""
    callers = {"lanes": await caller(client, services), "routes": await caller(bare, services)}
    differing = {}
    for case, make in cases.items():
        answers: dict[str, list[dict[str, Any]]] = {}
        for name, http in (("lanes", client), ("routes", bare)):
            headers, raw = make(await with_new_code(http, callers[name]))
            answers[name] = [
                answer(await http.post(path, content=raw, headers=headers)) for _ in range(2)
            ]
        if answers["lanes"] != answers["routes"]:
            differing[case] = answers
    assert not differing, differing


async def test_a_redemption_is_answered_as_its_route_answers(
    client: httpx.AsyncClient, bare: httpx.AsyncClient, services: Services
) -> None:
    await compare(client, bare, services, "/v1/me/redemptions", REDEMPTIONS)


async def test_a_payment_is_answered_as_its_route_answers(
    client: httpx.AsyncClient, bare: httpx.AsyncClient, services: Services
) -> None:
    await compare(client, bare, services, "/v1/payments", PAYMENTS)


@pytest.fixture
def lane_answers() -> Iterator[dict[str, int]]:
    """How many answers each lane gave (its route's own answers are not counted)."""
    counted: dict[str, int] = {}
    lanes = (*routes_customers.LANES, *routes_payments.LANES)
    answers = [lane.answer for lane in lanes]

    def counting(lane: Lane[Any, Any], answer: Any) -> Any:
        async def counted_answer(*arguments: Any) -> Any:
            counted[lane.route.path] += 1
            return await answer(*arguments)

        return counted_answer

    for lane, answer in zip(lanes, answers, strict=True):
        counted[lane.route.path] = 0
        object.__setattr__(lane, "answer", counting(lane, answer))
    try:
        yield counted
    finally:
        for lane, answer in zip(lanes, answers, strict=True):
            object.__setattr__(lane, "answer", answer)


# Which of the redemption cases the lane answers: only its route's plain case.
BY_LANE = {
    "plain": True,
    "charset": True,
    "unknown code": True,
    "an API key": False,  # The door refuses before the answer.
    "text/plain": False,
    "not JSON": False,
    "key too long": False,
}


async def test_the_lane_answers_only_the_plain_case(
    client: httpx.AsyncClient, services: Services, lane_answers: dict[str, int]
) -> None:
    who = await caller(client, services)
    answered = {}
    for case in BY_LANE:
        headers, raw = REDEMPTIONS[case](await with_new_code(client, who))
        lane_answers["/v1/me/redemptions"] = 0
        await client.post("/v1/me/redemptions", content=raw, headers=headers)
        answered[case] = lane_answers["/v1/me/redemptions"] == 1
    assert answered == BY_LANE


async def test_checkout_goes_by_its_lane(
    client: httpx.AsyncClient, services: Services, lane_answers: dict[str, int]
) -> None:
    headers, raw = PAYMENTS["plain"](await caller(client, services))
    response = await client.post("/v1/payments", content=raw, headers=headers)
    assert response.status_code == 201, response.text
    assert lane_answers["/v1/payments"] == 1


def test_a_lane_is_only_for_a_post() -> None:
    route = route_of(routes_customers.router.routes, routes_customers.balance)
    with pytest.raises(ValueError, match="POST"):
        Lane(route, BalanceOut, customer, None)  # type: ignore[arg-type]
