"""What every route needs: the services, who is calling, where from, and idempotency."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import idempotency
from giftcard.api.problems import problem_json
from giftcard.customers import (
    ApiKeyPrincipal,
    CustomerPrincipal,
    Principal,
    Role,
    StaffPrincipal,
    authenticate,
)
from giftcard.errors import ErrorCode, GiftcardError, TooManyAttempts
from giftcard.http import services

T = TypeVar("T")

# Declared on every money-moving POST so the OpenAPI document shows it; read by
# run_idempotent from the request itself.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=idempotency.KEY_LENGTH_MAX,
        description="Retry safely: a repeated request with the same key and body returns "
        "the first response without acting again.",
    ),
]

bearer = HTTPBearer(
    auto_error=False, description="A customer or staff session token, or an API key"
)


async def principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise GiftcardError(
            ErrorCode.UNAUTHORIZED, "Send a session token or API key as 'Authorization: Bearer …'."
        )
    svc = services(request)
    found = await authenticate(svc.db, credentials.credentials, clock=svc.clock)
    if found is None:
        raise GiftcardError(ErrorCode.UNAUTHORIZED, "The token is unknown, expired or revoked.")
    request.state.actor = found.actor
    return found


async def customer(who: Principal = Depends(principal)) -> CustomerPrincipal:
    if not isinstance(who, CustomerPrincipal):
        raise GiftcardError(ErrorCode.FORBIDDEN, "Only a customer's own session may do this.")
    return who


def roles(*allowed: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting API keys (and staff sessions) with one of `allowed` roles."""

    async def check(who: Principal = Depends(principal)) -> Principal:
        if isinstance(who, ApiKeyPrincipal | StaffPrincipal) and who.role in allowed:
            return who
        names = ", ".join(role.value for role in allowed)
        raise GiftcardError(ErrorCode.FORBIDDEN, f"This needs an API key with role {names}.")

    return check


def scope_of(who: Principal) -> str:
    return who.actor


async def run_idempotent(
    request: Request,
    *,
    who: Principal,
    body: Any,
    status: int,
    act: Callable[[Callable[[AsyncConnection, T], Awaitable[None]] | None], Awaitable[T]],
    render: Callable[[T], dict[str, Any]],
    render_stored: Callable[[T], dict[str, Any]] | None = None,
) -> Response:
    """Run `act` once per Idempotency-Key: the response is stored in the same transaction
    as the effect, and a retry with the same key gets it back without acting again."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return JSONResponse(render(await act(None)), status_code=status)
    svc = services(request)
    fingerprint = idempotency.fingerprint(
        svc.settings.secret_key, request.method, request.url.path, body
    )
    claimed = await idempotency.claim(
        svc.db, scope=scope_of(who), key=key, request_fingerprint=fingerprint, now=svc.clock.now()
    )
    if isinstance(claimed, idempotency.Replay):
        return Response(
            claimed.body,
            status_code=claimed.status,
            media_type="application/problem+json" if claimed.status >= 400 else "application/json",
            headers={"Idempotent-Replayed": "true"},
        )

    async def record(connection: AsyncConnection, result: T) -> None:
        body = JSONResponse((render_stored or render)(result)).body
        await idempotency.complete(connection, claimed, status=status, body=bytes(body).decode())

    try:
        result = await act(record)
    except GiftcardError as error:
        if isinstance(error, TooManyAttempts) or error.status >= 500:
            # Passing refusals: the retry should be judged afresh, not replayed.
            await idempotency.release(svc.db, claimed)
            raise
        # A refusal moved nothing; remember it so the retry is answered the same way.
        await idempotency.complete_alone(
            svc.db, claimed, status=error.status, body=problem_json(error)
        )
        raise
    except BaseException:
        await idempotency.release(svc.db, claimed)
        raise
    return JSONResponse(render(result), status_code=status)
