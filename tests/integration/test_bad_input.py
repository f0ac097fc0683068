"""Wrong input of any shape gets a clear 4xx problem, never a 500, and changes nothing
(SPEC §9): malformed JSON, wrong types, impossible amounts, junk text, extra fields, the
wrong media type, oversized bodies, unknown routes and methods."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import func, select

from giftcard.config import Settings
from giftcard.db.tables import cards, customers, idempotency_keys, journal_transactions
from giftcard.services import Services
from tests.conftest import PROBLEM, Shopper, api_key, assert_problem, issue, sign_up

GOOD_CARD = {"amount": 2500, "region": "US", "kind": "digital"}
GOOD_CODE = "7KQ4-M2ZP-X9CD-R3TW"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The abuse limits out of the way: these tests send many bad requests on purpose,
    and each must be judged on its content, not refused as one too many."""
    return replace(
        settings,
        limit_redeem_failures_account="10000/15minutes",
        limit_redeem_failures_address="10000/15minutes",
        limit_redeem_misses_service="10000/15minutes",
        limit_signups_address="10000/hour",
        limit_login_failures_account="10000/15minutes",
        limit_login_failures_address="10000/15minutes",
    )


async def counts(services: Services) -> dict[str, int]:
    """How many rows the tables that input could change hold."""
    found: dict[str, int] = {}
    async with services.db.transaction(write=False) as connection:
        for table in (cards, customers, journal_transactions, idempotency_keys):
            query = select(func.count()).select_from(table)
            found[table.name] = int((await connection.execute(query)).scalar_one())
    return found


async def balance(client: httpx.AsyncClient, shopper: Shopper) -> dict[str, Any]:
    response = await client.get("/v1/me/balance", headers=shopper.auth)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_malformed_json_bodies_are_validation_errors(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given bodies that are not JSON, are JSON of the wrong shape, or are not UTF-8, when
    posted to sign-up, issuing and redeeming, then each is 422 validation_error and no
    row changes."""
    admin = await api_key(services)
    shopper = await sign_up(client)
    before = await counts(services)
    bodies: list[bytes] = [
        b"{",
        b'{"amount": 2500,',
        b"{'amount': 2500}",
        b'{"amount": 2500, "region": "US", "kind": "digital",}',
        b"amount=2500",
        b"\xff\xfe\x00{",
        b'{"amount": 2500, "region": "US\xff", "kind": "digital"}',
        b"[]",
        b"null",
        b'"text"',
        b"42",
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b'{"amount": ' + b"9" * 5000 + b', "region": "US", "kind": "digital"}',
    ]
    targets = [
        ("/v1/cards", admin),
        ("/v1/me/redemptions", shopper.auth),
        ("/v1/customers", {}),
        ("/v1/sessions", {}),
    ]

    for path, auth in targets:
        for content in bodies:
            response = await client.post(
                path, content=content, headers={**auth, "Content-Type": "application/json"}
            )
            assert_problem(response, 422, "validation_error", why=f"{path} {content[:40]!r}")
    assert await counts(services) == before
    assert (await balance(client, shopper))["total"] == 0


async def test_a_body_that_breaks_off_says_where_and_names_no_field(
    client: httpx.AsyncClient,
) -> None:
    """The position where the JSON breaks is no field of the request: it is told in the
    detail, and `param` is left out."""
    shopper = await sign_up(client)
    response = await client.post(
        "/v1/me/redemptions",
        content=b'{"code": ',
        headers={**shopper.auth, "Content-Type": "application/json"},
    )
    problem = assert_problem(response, 422, "validation_error", param=None)
    assert problem["detail"] == "The request body is not valid JSON (at character 9)."


async def test_wrong_types_and_impossible_amounts_are_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given an issue request with an amount or count that is a string, a float (even
    25.0), a bool, null, a list, an object, zero, negative or astronomically large, when
    posted, then 422 validation_error on that field and no card is issued."""
    admin = await api_key(services)
    before = await counts(services)
    wrong: list[Any] = [
        "2500",
        25.0,
        2500.5,
        True,
        False,
        None,
        [2500],
        {"value": 2500},
        0,
        -1,
        -2500,
        10**12,
        10**30,
        2**63,
        1e308,
    ]

    for value in wrong:
        for field in ("amount", "count"):
            response = await client.post(
                "/v1/cards", json={**GOOD_CARD, field: value}, headers=admin
            )
            assert_problem(response, 422, "validation_error", param=field, why=f"{field}={value!r}")
    wrong_by_field: dict[str, list[Any]] = {
        "kind": ["Digital", "gift", 1, None, ""],
        "region": [1, None, True, ["US"], "", "U S", "usa"],
        "currency": [840, True, ["USD"], "US", "USDD"],
        "expires_at": [True, [], {}],
    }
    for field, values in wrong_by_field.items():
        for value in values:
            response = await client.post(
                "/v1/cards", json={**GOOD_CARD, field: value}, headers=admin
            )
            assert_problem(response, 422, "validation_error", param=field, why=f"{field}={value!r}")
    for float_like in (b"1e400", b"NaN", b"Infinity", b"-Infinity", b"2.5e3"):
        content = b'{"amount": ' + float_like + b', "region": "US", "kind": "digital"}'
        response = await client.post(
            "/v1/cards", content=content, headers={**admin, "Content-Type": "application/json"}
        )
        assert_problem(response, 422, "validation_error", why=float_like.decode())
    assert await counts(services) == before


async def test_unknown_regions_are_refused_everywhere(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given region codes no store has (including look-alikes such as the dotless ı),
    when signing up or issuing, then 422 validation_error on `region` lists the stores,
    and nothing is created."""
    admin = await api_key(services)
    before = await counts(services)

    for region in [
        "XX",
        "EU",
        "UK",
        "\u0131n",
        "U\u0301S",
        "us\u200b",
        "12",
        "\U0001f1fa\U0001f1f8",
    ]:
        signed = await client.post(
            "/v1/customers",
            json={"email": "new@example.com", "password": "long enough pw", "region": region},
        )
        body = assert_problem(signed, 422, "validation_error", param="region", why=region)
        assert "US" in body["detail"]
        issued = await client.post("/v1/cards", json={**GOOD_CARD, "region": region}, headers=admin)
        assert_problem(issued, 422, "validation_error", param="region", why=region)
    assert await counts(services) == before


async def test_overlong_strings_are_refused(client: httpx.AsyncClient, services: Services) -> None:
    """Given strings far longer than any real value (email, password, name, region, code,
    serial), when posted, then 422 with the field named and nothing stored."""
    admin = await api_key(services)
    shopper = await sign_up(client)
    before = await counts(services)
    long = "a" * 10_000
    sign_up_body = {"email": "x@example.com", "password": "long enough pw", "region": "US"}
    cases: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
        ("/v1/customers", {**sign_up_body, "email": long + "@example.com"}, {}, "email"),
        ("/v1/customers", {**sign_up_body, "password": long}, {}, "password"),
        ("/v1/customers", {**sign_up_body, "name": long}, {}, "name"),
        ("/v1/customers", {**sign_up_body, "region": long}, {}, "region"),
        ("/v1/sessions", {"email": long, "password": "long enough pw"}, {}, "email"),
        ("/v1/cards", {**GOOD_CARD, "region": long}, admin, "region"),
        ("/v1/cards", {**GOOD_CARD, "currency": long}, admin, "currency"),
        ("/v1/cards/activate", {"serial": long}, admin, "serial"),
    ]

    for path, body, auth, param in cases:
        response = await client.post(path, json=body, headers=auth)
        assert_problem(response, 422, "validation_error", param=param, why=f"{path} {param}")
    redeemed = await client.post("/v1/me/redemptions", json={"code": long}, headers=shopper.auth)
    assert redeemed.status_code == 422, redeemed.text
    assert redeemed.json()["param"] == "code"
    assert redeemed.json()["code"] in ("code_malformed", "validation_error")
    assert await counts(services) == before


# Text no field may hold: NUL (PostgreSQL cannot even store it), terminal escapes, and
# lone UTF-16 surrogates (valid in JSON escapes, not encodable as UTF-8).
JUNK_REFUSED = ["\x00", "a\x00b@example.com", "\x07\x1b[31m", "\ud800", "a\udfff@example.com"]
# Text some fields may legitimately hold (a name with an emoji), so it must only never
# crash anything; invisible and bidirectional-override characters are refused in emails.
JUNK_TOLERATED = ["\U0001f4a9@\U0001f4a9.\U0001f4a9", "\u202eevil@example.com", "\ufeff"]


async def test_unicode_junk_is_refused_not_crashed_on(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given text with NUL bytes, other control characters, lone UTF-16 surrogates, emoji
    and invisible or right-to-left marks in every text field, when posted, then no answer
    is a 500, control characters and surrogates are refused everywhere with a 4xx problem
    and store nothing, and emails with invisible characters are refused."""
    admin = await api_key(services)
    shopper = await sign_up(client)
    before = await counts(services)
    failures: list[str] = []

    for text in JUNK_REFUSED + JUNK_TOLERATED:
        sign_up_body = {"email": f"{uuid4().hex}@example.com", "password": "long enough pw"}
        attempts: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = [
            ("POST", "/v1/customers", {**sign_up_body, "region": "US", "email": text}, {}),
            ("POST", "/v1/customers", {**sign_up_body, "region": "US", "name": text}, {}),
            ("POST", "/v1/customers", {**sign_up_body, "region": text}, {}),
            ("POST", "/v1/sessions", {"email": text, "password": "long enough pw"}, {}),
            ("POST", "/v1/sessions", {"email": shopper.email, "password": text * 8}, {}),
            ("POST", "/v1/me/redemptions", {"code": text}, shopper.auth),
            ("POST", "/v1/me/redemptions", {"code": GOOD_CODE[:-1] + text}, shopper.auth),
            ("PATCH", "/v1/me", {"name": text}, shopper.auth),
            ("PATCH", "/v1/me", {"refund_preference": text}, shopper.auth),
            ("POST", "/v1/cards", {**GOOD_CARD, "region": text}, admin),
            ("POST", "/v1/cards", {**GOOD_CARD, "currency": text * 3}, admin),
            ("POST", "/v1/cards", {**GOOD_CARD, "kind": text}, admin),
            ("POST", "/v1/cards", {**GOOD_CARD, "expires_at": text}, admin),
            ("POST", "/v1/cards/activate", {"serial": text}, admin),
            ("GET", f"/v1/cards/card_{quote(text, errors='surrogatepass')}", None, admin),
        ]
        for method, path, body, auth in attempts:
            content = None if body is None else json.dumps(body).encode()
            response = await client.request(
                method,
                path,
                content=content,
                headers={**auth, "Content-Type": "application/json"},
            )
            why = f"{method} {path} {body!r}: {response.status_code} {response.text[:160]}"
            may_succeed = text in JUNK_TOLERATED and body is not None and "name" in body
            may_succeed |= text.startswith("\U0001f4a9") and path != "/v1/cards"
            if response.status_code >= 500:
                failures.append("server error: " + why)
            elif response.status_code == 429:
                failures.append("rate limited, so not judged: " + why)
            elif response.status_code < 400:
                if not may_succeed:
                    failures.append("accepted: " + why)
            elif not (
                response.headers["content-type"].startswith(PROBLEM)
                and response.json()["status"] == response.status_code
            ):
                failures.append("not a problem: " + why)
        cursor = quote(text, errors="surrogatepass")
        history = await client.get(
            f"/v1/me/transactions?starting_after={cursor}", headers=shopper.auth
        )
        assert_problem(history, 422, "validation_error", param="starting_after", why=repr(text))

    assert not failures, "\n".join(failures)
    after = await counts(services)
    assert after["cards"] == before["cards"]
    assert after["idempotency_keys"] == before["idempotency_keys"]
    me = (await client.get("/v1/me", headers=shopper.auth)).json()
    assert me["name"] in JUNK_TOLERATED


async def test_extra_unknown_fields_are_refused(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given otherwise valid bodies with a field the API does not know (including ones
    that try to set server-owned values), when posted, then 422 validation_error names
    that field and nothing changes."""
    admin = await api_key(services)
    shopper = await sign_up(client)
    [card] = await issue(client, admin)
    before = await counts(services)
    cases: list[tuple[str, str, dict[str, Any], dict[str, str], str]] = [
        (
            "POST",
            "/v1/customers",
            {
                "email": "n@example.com",
                "password": "long enough pw",
                "region": "US",
                "role": "admin",
            },
            {},
            "role",
        ),
        (
            "POST",
            "/v1/sessions",
            {"email": shopper.email, "password": "x" * 8, "ttl": 9},
            {},
            "ttl",
        ),
        ("POST", "/v1/cards", {**GOOD_CARD, "state": "redeemed"}, admin, "state"),
        ("POST", "/v1/cards", {**GOOD_CARD, "code": GOOD_CODE}, admin, "code"),
        (
            "POST",
            "/v1/me/redemptions",
            {"code": card["code"], "amount": 10**6},
            shopper.auth,
            "amount",
        ),
        (
            "PATCH",
            "/v1/me",
            {"refund_preference": "gift_card_balance", "region": "GB"},
            shopper.auth,
            "region",
        ),
        ("POST", "/v1/cards/activate", {"serial": card["serial"], "amount": 1}, admin, "amount"),
    ]

    for method, path, body, auth, param in cases:
        response = await client.request(method, path, json=body, headers=auth)
        assert_problem(response, 422, "validation_error", param=param, why=f"{path} {param}")
    assert await counts(services) == before
    me = (await client.get("/v1/me", headers=shopper.auth)).json()
    assert me["region"] == "US"
    assert me["refund_preference"] == "original_payment_method"
    fetched = (await client.get(f"/v1/cards/{card['id']}", headers=admin)).json()
    assert fetched["state"] == "active"


async def test_wrong_content_type_is_a_4xx_problem(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given valid JSON sent as text/plain, XML or a form, when posted, then 415
    unsupported_media_type and nothing is issued or redeemed."""
    admin = await api_key(services)
    shopper = await sign_up(client)
    [card] = await issue(client, admin)
    before = await counts(services)

    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        for path, body, auth in [
            ("/v1/cards", GOOD_CARD, admin),
            ("/v1/me/redemptions", {"code": card["code"]}, shopper.auth),
        ]:
            response = await client.post(
                path,
                content=json.dumps(body).encode(),
                headers={**auth, "Content-Type": content_type},
            )
            assert response.status_code == 415, (content_type, response.text)
            assert response.headers["content-type"].startswith(PROBLEM)
            assert response.json()["code"] == "unsupported_media_type"
    form = await client.post("/v1/cards", data={"amount": "2500"}, headers=admin)
    assert form.status_code == 415
    assert await counts(services) == before
    assert (await balance(client, shopper))["total"] == 0


async def test_body_over_the_size_limit_is_payload_too_large(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a body over settings.request_body_bytes_max, whether its Content-Length says
    so or it is streamed without one, when posted, then 413 payload_too_large and nothing
    is issued; a body just under the limit is read normally."""
    admin = await api_key(services)
    limit = services.settings.request_body_bytes_max
    filler = "x" * limit
    oversized = json.dumps({**GOOD_CARD, "padding": filler}).encode()
    before = await counts(services)

    declared = await client.post(
        "/v1/cards", content=oversized, headers={**admin, "Content-Type": "application/json"}
    )

    async def stream() -> Any:
        for start in range(0, len(oversized), 4096):
            yield oversized[start : start + 4096]

    streamed = await client.post(
        "/v1/cards", content=stream(), headers={**admin, "Content-Type": "application/json"}
    )

    assert_problem(declared, 413, "payload_too_large")
    assert_problem(streamed, 413, "payload_too_large")
    bogus_length = await client.post(
        "/v1/customers",
        content=b"{}",
        headers={"Content-Type": "application/json", "Content-Length": "abc"},
    )
    assert 400 <= bogus_length.status_code < 500
    just_under = json.dumps({**GOOD_CARD, "kind": "digital" + " " * 0}).encode()
    just_under += b" " * (limit - len(just_under))
    assert len(just_under) == limit
    accepted = await client.post(
        "/v1/cards", content=just_under, headers={**admin, "Content-Type": "application/json"}
    )
    assert accepted.status_code == 201, accepted.text
    after = await counts(services)
    assert after["cards"] == before["cards"] + 1


async def test_unknown_route_and_wrong_method_are_problems(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given an address that does not exist, when called, then 404 not_found as a
    problem; given a known address with a method it does not take, then 405
    method_not_allowed with an Allow header, and nothing changes."""
    shopper = await sign_up(client)
    admin = await api_key(services)
    before = await counts(services)

    for method, path in [
        ("GET", "/v1/nothing-here"),
        ("POST", "/v1/nothing-here"),
        ("GET", "/v2/me"),
        ("GET", "/v1/me/redemptions/1"),
        ("DELETE", "/v1/cards/card_1/extra"),
        ("GET", "/v1/%00"),
    ]:
        response = await client.request(method, path, headers=shopper.auth)
        assert_problem(response, 404, "not_found", why=f"{method} {path}")

    for method, path, auth in [
        ("GET", "/v1/customers", {}),
        ("DELETE", "/v1/me", shopper.auth),
        ("PUT", "/v1/me", shopper.auth),
        ("GET", "/v1/me/redemptions", shopper.auth),
        ("DELETE", "/v1/cards/card_1", admin),
        ("PUT", "/v1/cards/activate", admin),
        ("GET", "/v1/cards", admin),
        ("PATCH", "/v1/sessions/current", shopper.auth),
    ]:
        response = await client.request(method, path, headers=auth)
        assert_problem(response, 405, "method_not_allowed", why=f"{method} {path}")
        assert response.headers.get("allow"), (method, path)
    assert await counts(services) == before
