"""The OpenAPI document is the API's contract: every route is in it with the problems it
can answer, and a generated-input run (schemathesis) finds no response it does not
describe and no server error.

These tests run on SQLite only: they check the documented surface, which does not depend
on the database; the behaviour behind it runs on both databases in the other tests.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from giftcard import customers
from giftcard.api.app import create_app
from giftcard.clock import SystemClock
from giftcard.config import Settings
from giftcard.db.engine import Database
from tests.conftest import TEST_SECRET_KEY

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"
# Statuses every operation can answer with: an invalid request, a body over the size
# limit (checked before routing), and an unexpected failure.
PROBLEM_STATUSES_ALWAYS = ("413", "422", "500")

# Every endpoint of SPEC §6 (method, path). The app grows into this list; whatever part
# of it exists must be in the OpenAPI document.
SPEC_ENDPOINTS = (
    ("POST", "/v1/customers"),
    ("POST", "/v1/sessions"),
    ("DELETE", "/v1/sessions/current"),
    ("GET", "/v1/me"),
    ("PATCH", "/v1/me"),
    ("POST", "/v1/me/redemptions"),
    ("GET", "/v1/me/balance"),
    ("GET", "/v1/me/transactions"),
    ("GET", "/v1/me/gifts"),
    ("POST", "/v1/cards"),
    ("POST", "/v1/cards/activate"),
    ("GET", "/v1/cards/{id}"),
    ("POST", "/v1/payments"),
    ("POST", "/v1/payments/{id}/capture"),
    ("POST", "/v1/payments/{id}/void"),
    ("POST", "/v1/payments/{id}/refunds"),
    ("GET", "/v1/payments/{id}"),
    ("POST", "/v1/gifts"),
    ("POST", "/v1/gifts/{id}/resend"),
    ("POST", "/v1/support/lookups"),
    ("GET", "/v1/support/customers"),
    ("GET", "/v1/support/customers/{id}"),
    ("GET", "/v1/support/customers/{id}/transactions"),
    ("POST", "/v1/support/customers/{id}/adjustments"),
    ("POST", "/v1/support/adjustments/{id}/approve"),
    ("POST", "/v1/support/adjustments/{id}/reject"),
    ("POST", "/v1/support/cards/{id}/freeze"),
    ("POST", "/v1/support/cards/{id}/unfreeze"),
    ("POST", "/v1/support/cards/{id}/cancel"),
    ("POST", "/v1/support/cards/{id}/replace"),
    ("GET", "/v1/support/audit-log"),
    ("GET", "/v1/reports/liability"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
)
# What exists today; the test fails if one of these disappears from the app.
IMPLEMENTED_AT_LEAST = {
    ("POST", "/v1/customers"),
    ("POST", "/v1/sessions"),
    ("DELETE", "/v1/sessions/current"),
    ("GET", "/v1/me"),
    ("PATCH", "/v1/me"),
    ("POST", "/v1/me/redemptions"),
    ("GET", "/v1/me/balance"),
    ("GET", "/v1/me/transactions"),
    ("POST", "/v1/cards"),
    ("POST", "/v1/cards/activate"),
    ("GET", "/v1/cards/{id}"),
    ("GET", "/v1/me/gifts"),
    ("POST", "/v1/gifts"),
    ("POST", "/v1/gifts/{id}/resend"),
    ("POST", "/v1/support/lookups"),
    ("GET", "/v1/support/customers"),
    ("GET", "/v1/support/customers/{id}"),
    ("GET", "/v1/support/customers/{id}/transactions"),
    ("POST", "/v1/support/customers/{id}/adjustments"),
    ("POST", "/v1/support/adjustments/{id}/approve"),
    ("POST", "/v1/support/adjustments/{id}/reject"),
    ("POST", "/v1/support/cards/{id}/freeze"),
    ("POST", "/v1/support/cards/{id}/unfreeze"),
    ("POST", "/v1/support/cards/{id}/cancel"),
    ("POST", "/v1/support/cards/{id}/replace"),
    ("GET", "/v1/support/audit-log"),
    ("GET", "/v1/reports/liability"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
}

# Schemathesis: a bounded run per operation, generation mode and role.
EXAMPLES_PER_ROLE_MAX = 10
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# The abuse limits are raised so that generated input reaches the code behind them; a
# lock-out answers every request the same way and would hide the rest.
LIMIT_GENEROUS = "100000/hour"

# Built without a database: the document does not depend on one.
_DOCUMENT_APP = create_app(Settings(database_url="sqlite://", secret_key=TEST_SECRET_KEY))


def _document() -> dict[str, Any]:
    return _DOCUMENT_APP.openapi()


def _api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route the app lists in its schema, including
    those of included routers."""
    return sorted(
        (method, str(route.path))
        for route in iter_route_contexts(app.routes)
        if getattr(route, "include_in_schema", False)
        for method in route.methods or ()
        if method != "HEAD"
    )


def _operations() -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, item in _document()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    )


def _fuzz_runs() -> list[tuple[str, str, schemathesis.GenerationMode]]:
    """Valid input for every operation; invalid input for those that take a body or a
    query, as an operation without either has no input to get wrong."""
    paths = _document()["paths"]
    runs = []
    for method, path in _operations():
        runs.append((method, path, schemathesis.GenerationMode.POSITIVE))
        operation = paths[path][method.lower()]
        parameters = operation.get("parameters", [])
        if "requestBody" in operation or any(item["in"] == "query" for item in parameters):
            runs.append((method, path, schemathesis.GenerationMode.NEGATIVE))
    return runs


def _exists_in_app(app: FastAPI, method: str, spec_path: str) -> bool:
    """Whether a route of the app answers `method spec_path`, whatever its ids are named."""
    for route_method, template in _api_routes(app):
        # Templates hold only letters, digits, "/", "-", "_" and {names}.
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", template)
        if route_method == method and re.fullmatch(pattern, spec_path.replace("{id}", "x_1")):
            return True
    return False


# -- (a) the document --------------------------------------------------------------------


def test_every_route_is_documented_with_its_problem_responses() -> None:
    """Every route of the app is an operation of /openapi.json whose error statuses are
    problem documents; an operation behind authentication documents 401."""
    paths = _document()["paths"]
    routes = _api_routes(_DOCUMENT_APP)
    complaints: list[str] = []

    for method, path in routes:
        label = f"{method} {path}"
        operation = paths.get(path, {}).get(method.lower())
        if operation is None:
            complaints.append(f"{label} is missing from /openapi.json")
            continue
        responses = operation["responses"]
        complaints += [
            f"{label} does not document {status}"
            for status in PROBLEM_STATUSES_ALWAYS
            if status not in responses
        ]
        for status, entry in responses.items():
            if not (status.isdigit() and int(status) >= 400):
                continue
            schema = entry.get("content", {}).get(PROBLEM_MEDIA_TYPE, {}).get("schema")
            if schema != {"$ref": PROBLEM_REF}:
                complaints.append(f"{label} {status} is not a {PROBLEM_MEDIA_TYPE} Problem")
        if operation.get("security") and "401" not in responses:
            complaints.append(f"{label} needs credentials but does not document 401")

    assert len(routes) >= len(IMPLEMENTED_AT_LEAST)
    assert complaints == []


def test_problem_schema_is_rfc_9457_with_a_code() -> None:
    """The Problem schema names the RFC 9457 members and giftcard's stable `code`."""
    problem = _document()["components"]["schemas"]["Problem"]

    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    assert {"type", "title", "status", "detail", "code", "param"} <= set(problem["properties"])


def test_spec_endpoints_that_exist_are_documented() -> None:
    """Each SPEC §6 endpoint the app serves is in /openapi.json under the same path, and
    the ones implemented today are all there."""
    documented = {(method, re.sub(r"\{[^}]+\}", "{id}", path)) for method, path in _operations()}
    existing = {
        (method, path)
        for method, path in SPEC_ENDPOINTS
        if _exists_in_app(_DOCUMENT_APP, method, path)
    }

    assert existing >= IMPLEMENTED_AT_LEAST
    assert existing <= documented, sorted(existing - documented)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_openapi_json_is_served(client: Any) -> None:
    """/openapi.json is the document the tests read."""
    document = await client.get("/openapi.json")

    assert document.status_code == 200
    assert document.json() == _document()


def _policy(response: httpx.Response) -> dict[str, list[str]]:
    """The Content-Security-Policy header as {directive: sources}."""
    directives = {}
    for part in response.headers["content-security-policy"].split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_pages_load_everything_from_this_server(client: Any, path: str) -> None:
    """/docs and /redoc name the OpenAPI document and load every script, style and icon
    from this server, each answered with 200 (nothing from a CDN: they work offline);
    their Content-Security-Policy allows scripts from this server only, and no page
    script is inline."""
    page = await client.get(path)

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'data-openapi-url="/openapi.json"' in page.text
    urls = re.findall(r'<(?:script|link)\b[^>]*\b(?:src|href)="([^"]*)"', page.text)
    assert len(urls) >= 3, urls
    for url in urls:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
    assert len(re.findall(r"<script\b", page.text)) == len(
        re.findall(r"<script\b[^>]*\bsrc=", page.text)
    )
    policy = _policy(page)
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    for sources in policy.values():
        for source in sources:
            assert source.startswith("'") or source in ("data:", "blob:"), source


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_docs_pages_allow_no_inline_style_but_redocs_own(client: Any) -> None:
    """Swagger UI's page allows styles from this server only; ReDoc's allows, beside
    those, only the contents its bundle writes as it loads, named by their hashes."""
    swagger = _policy(await client.get("/docs"))
    redoc = _policy(await client.get("/redoc"))

    assert swagger["style-src"] == ["'self'"]
    assert redoc["style-src"][0] == "'self'"
    assert redoc["style-src"][1:]
    assert all(source.startswith("'sha256-") for source in redoc["style-src"][1:])


# -- (b) generated input -----------------------------------------------------------------

# Who calls every operation, one after the other: the store's back end with a merchant
# API key, a shopper with their session, and a staff member (an admin) with theirs.
ROLES = ("merchant", "shopper", "staff")


# How the door refuses a caller: unknown credentials, or credentials without the right.
# Any other answer, even a refusal (a wrong password at log-in is 401
# `invalid_credentials`), came from inside the operation.
DOOR_REFUSALS = frozenset({"401 unauthorized", "403 forbidden"})


def answers_as_each(
    operation: Any,
    mode: Any,
    roles: Iterable[str],
    secret: Callable[[str], str],
    *,
    examples: int = EXAMPLES_PER_ROLE_MAX,
) -> dict[str, list[str]]:
    """Each role's answers (`_answer`) to generated requests to `operation`, sent with
    the secret `secret(role)`; each checked against the document as it comes."""
    answers: dict[str, list[str]] = {role: [] for role in roles}

    def run_as(role: str) -> None:
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def exchange(case: schemathesis.Case) -> None:
            headers = {"Authorization": f"Bearer {secret(role)}"}
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            answers[role].append(_answer(response))

        exchange()

    for role in answers:
        run_as(role)
    return answers


def _answer(response: Any) -> str:
    """`<status> <problem code>` for a problem document, else the status alone (from a
    schemathesis response, whose headers map each name to its list of values)."""
    content_types = response.headers.get("content-type") or [""]
    if content_types[0].startswith(PROBLEM_MEDIA_TYPE):
        return f"{response.status_code} {response.json().get('code')}"
    return str(response.status_code)


@dataclass
class Fuzzing:
    app: FastAPI
    merchant_key: str
    new_session_token: Callable[[str], str]
    session_tokens: dict[str, str]

    def secret(self, role: str, method: str, path: str) -> str:
        """The secret `role` sends to `method path`: log-out ends the session it is
        sent with, so each log-out gets a session of its own."""
        if role == "merchant":
            return self.merchant_key
        if (method, path) == ("DELETE", "/v1/sessions/current"):
            return self.new_session_token(role)
        return self.session_tokens[role]


@pytest.fixture
def fuzzing(database_url: str) -> Iterator[Fuzzing]:
    """An app on its own database, with a merchant API key, a shopper and an admin
    staff member, each of the two logged in.

    The app builds its services in its lifespan, which schemathesis runs in its own event
    loop thread, so that every connection is opened in the loop that uses it; the set-up
    here uses a database handle of its own in a loop of its own."""
    settings = Settings(
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        limit_redeem_failures_account=LIMIT_GENEROUS,
        limit_redeem_failures_address=LIMIT_GENEROUS,
        limit_redeem_misses_service=LIMIT_GENEROUS,
        limit_signups_address=LIMIT_GENEROUS,
        limit_login_failures_account=LIMIT_GENEROUS,
        limit_login_failures_address=LIMIT_GENEROUS,
    )
    password = "correct horse battery"
    emails = {"shopper": "fuzz-shopper@example.com", "staff": "fuzz-staff@example.com"}
    clock = SystemClock()

    async def seed() -> str:
        db = Database(database_url)
        try:
            _, key = await customers.create_api_key(
                db, role=customers.Role.MERCHANT, name="fuzz", clock=clock
            )
            await customers.sign_up(
                db, email=emails["shopper"], password=password, region="US", name=None, clock=clock
            )
            await customers.create_staff(
                db, email=emails["staff"], password=password, role=customers.Role.ADMIN, clock=clock
            )
        finally:
            await db.dispose()
        return key

    async def log_in(role: str) -> str:
        db = Database(database_url)
        try:
            session = await customers.log_in(
                db, email=emails[role], password=password, ttl_s=3600, clock=clock
            )
        finally:
            await db.dispose()
        return session.token

    merchant_key = asyncio.run(seed())
    yield Fuzzing(
        app=create_app(settings),
        merchant_key=merchant_key,
        new_session_token=lambda role: asyncio.run(log_in(role)),
        session_tokens={role: asyncio.run(log_in(role)) for role in emails},
    )
    # Runs the lifespan's shutdown, which closes the app's database connections.
    shutdown_lifespans()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("method", "path", "mode"), _fuzz_runs())
def test_generated_requests_get_documented_answers(
    fuzzing: Fuzzing, method: str, path: str, mode: schemathesis.GenerationMode
) -> None:
    """Given generated requests, valid and invalid, to one operation, sent by each role
    in turn, every answer has a documented status, content type and body shape, and none
    is a server error; and some role gets past authentication and authorization, so that
    the answers come from the operation and not only from the door."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzing.app)
    statuses = answers_as_each(
        schema[path][method], mode, ROLES, lambda role: fuzzing.secret(role, method, path)
    )
    assert all(statuses.values()), statuses
    assert any(
        answer not in DOOR_REFUSALS for answers in statuses.values() for answer in answers
    ), f"{method} {path} never got past the door under any role: {statuses}"
