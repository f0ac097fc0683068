"""What every route needs: the services, who is calling, where from, and idempotency."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Header, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from giftcard import audit, idempotency
from giftcard.api.problems import problem_json
from giftcard.customers import (
    ApiKeyPrincipal,
    CustomerPrincipal,
    Principal,
    Role,
    StaffPrincipal,
    authenticate,
)
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.http import services
from giftcard.unit_of_work import UnitOfWork

T = TypeVar("T")

# Declared on every money-moving POST so the OpenAPI document shows it; read by
# run_idempotent from the request itself.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=idempotency.KEY_LENGTH_MIN,
        max_length=idempotency.KEY_LENGTH_MAX,
        description="Retry safely: a repeated request with the same key and body returns "
        "the first response without acting again.",
    ),
]


class Door(HTTPBearer, Generic[T]):
    """Who is calling, admitted by `admit` (or refused by raising), as one dependency
    that is also the bearer scheme the OpenAPI document declares. FastAPI solves each
    level of dependencies anew at every request: with the scheme read by a dependency of
    its own, a request refused by authentication cost 11-14 us more of CPU (in one
    process, `POST /v1/me/redemptions` 127-130 against 116-117 us, `POST /v1/payments`
    149 against 135); and a door that found who was calling through another dependency
    still, `GET /v1/me` 114-120 us instead of 107."""

    def __init__(self, admit: Callable[[Request, Principal], T]) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="HTTPBearer",
            description="A customer or staff session token, or an API key",
        )
        self.admit = admit

    async def __call__(self, request: Request) -> T:  # type: ignore[override]
        credentials = await super().__call__(request)
        return self.admit(request, await _authenticated(request, credentials))


def _anyone(request: Request, who: Principal) -> Principal:
    return who


def _customer_only(request: Request, who: Principal) -> CustomerPrincipal:
    if not isinstance(who, CustomerPrincipal):
        raise GiftcardError(ErrorCode.FORBIDDEN, "Only a customer's own session may do this.")
    return who


principal = Door(_anyone)
customer = Door(_customer_only)


async def _authenticated(
    request: Request, credentials: HTTPAuthorizationCredentials | None
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


# The roles a staff member can have; merchant is only ever an API key's.
STAFF_ROLES = (Role.SUPPORT, Role.ADMIN)


def needs_role(allowed: tuple[Role, ...]) -> str:
    """The refusal's sentence, naming exactly what `roles(*allowed)` admits."""
    keys = " or ".join(role.value for role in allowed)
    staff = [role.value for role in allowed if role in STAFF_ROLES]
    sentence = f"This needs an API key with role {keys}"
    if staff:
        sentence += f", or the session of a staff member with role {' or '.join(staff)}"
    return sentence + "."


def roles(*allowed: Role) -> Door[Principal]:
    """A dependency admitting API keys and staff sessions with one of `allowed` roles."""
    return Door(lambda request, who: _admitted(who, allowed))


def acting(*allowed: Role) -> Door[audit.Actor]:
    """Like :func:`roles`, giving the caller as the audit log names them."""

    def admit(request: Request, who: Principal) -> audit.Actor:
        admitted = _admitted(who, allowed)
        assert isinstance(admitted, ApiKeyPrincipal | StaffPrincipal)
        return audit.Actor(
            admitted.actor, admitted.role.value, getattr(request.state, "request_id", None)
        )

    return Door(admit)


def _admitted(who: Principal, allowed: tuple[Role, ...]) -> Principal:
    if isinstance(who, ApiKeyPrincipal | StaffPrincipal) and who.role in allowed:
        return who
    raise GiftcardError(ErrorCode.FORBIDDEN, needs_role(allowed))


async def run_idempotent(
    request: Request,
    *,
    who: Principal,
    body: Any,
    status: int,
    act: Callable[[UnitOfWork], Awaitable[T]],
    render: Callable[[T], dict[str, Any]],
    render_stored: Callable[[T], dict[str, Any]] | None = None,
) -> Response:
    """Run the use case `act` in a unit of work bound to the request's Idempotency-Key, if
    it has one: the answer is stored in the same transaction as the effect, and a retry
    with the same key gets it back without acting again. `render_stored` words what is
    kept for a replay when it must differ from the answer (never a code)."""
    svc = services(request)
    key = request.headers.get("idempotency-key")
    keyed = None
    # The answer stored under the key, when it is also the one to send: rendered once.
    stored_answer: list[str] = []
    if key is not None:
        idempotency.check_key(key)

        def answer(result: T) -> idempotency.StoredResponse:
            text = _json_text((render_stored or render)(result))
            if render_stored is None:
                # The last attempt's: a retried transaction answers again.
                stored_answer[:] = [text]
            return idempotency.StoredResponse(status, text)

        keyed = idempotency.KeyedRequest(
            scope=who.actor,
            key=key,
            fingerprint=idempotency.fingerprint(
                svc.settings.secret_key, request.method, request.url.path, body
            ),
            answer=answer,
            refusal=lambda error: idempotency.StoredResponse(error.status, problem_json(error)),
        )
    try:
        result = await act(svc.unit_of_work(keyed))
    except idempotency.Replayed as replayed:
        stored = replayed.response
        return Response(
            stored.body,
            status_code=stored.status,
            media_type="application/problem+json" if stored.status >= 400 else "application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    if stored_answer:
        return Response(stored_answer[0], status_code=status, media_type="application/json")
    return JSONResponse(render(result), status_code=status)


def _json_text(content: dict[str, Any]) -> str:
    return bytes(JSONResponse(content).body).decode()
