"""Sign-up, sessions, and the customer's own account, balance, redemptions and history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from giftcard import account_mail, customers, history, ids, redemption
from giftcard.api import render, schemas
from giftcard.api.deps import IdempotencyKey, customer, principal, run_idempotent
from giftcard.api.lanes import Lane, route_of
from giftcard.api.problems import problems
from giftcard.customers import CustomerPrincipal, Principal, RefundPreference
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.http import client_address, services, services_dependency
from giftcard.services import Services
from giftcard.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1")

# FastAPI tries a router's routes in the order they are declared, twice for the router
# that holds the match (about 2 us a route): the busiest come first.


@router.post(
    "/me/redemptions",
    status_code=201,
    response_model=schemas.RedemptionOut,
    responses=problems(401, 403, 404, 409, 429),
    tags=["me"],
    summary="Redeem a gift card code into the balance",
)
async def redeem(
    body: schemas.RedemptionCreate,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    who: CustomerPrincipal = Depends(customer),
) -> Any:
    return await _redeem(request, body, who)


async def _redeem(
    request: Request, body: schemas.RedemptionCreate, who: CustomerPrincipal
) -> Response:
    """What `redeem` answers; also what its lane answers (see :mod:`giftcard.api.lanes`)."""
    svc = services(request)
    address = client_address(request)

    async def act(uow: UnitOfWork) -> redemption.Redemption:
        return await redemption.redeem_limited(
            uow,
            svc.limits,
            who.customer,
            body.code,
            address=address,
            secret_key=svc.settings.secret_key,
            actor=who.actor,
        )

    return await run_idempotent(
        request,
        who=who,
        body=body.model_dump(),
        status=201,
        act=act,
        render=render.redemption,
    )


@router.get(
    "/me/balance",
    response_model=schemas.BalanceOut,
    responses=problems(401, 403),
    tags=["me"],
    summary="The gift card balance",
)
async def balance(
    who: CustomerPrincipal = Depends(customer), svc: Services = Depends(services_dependency)
) -> schemas.BalanceOut:
    return render.balance(await redemption.balance(svc.db, who.customer))


@router.get(
    "/me/transactions",
    response_model=schemas.TransactionList,
    responses=problems(401, 403),
    tags=["me"],
    summary="The balance's history, newest first",
)
async def transactions(
    who: CustomerPrincipal = Depends(customer),
    svc: Services = Depends(services_dependency),
    limit: Annotated[int, Query(ge=1, le=history.PAGE_SIZE_MAX)] = history.PAGE_SIZE_DEFAULT,
    starting_after: Annotated[str | None, Query(max_length=40)] = None,
) -> schemas.TransactionList:
    page = await history.customer_history(
        svc.db,
        who.customer,
        limit=limit,
        starting_after=ids.parse_cursor(ids.TRANSACTION, starting_after),
    )
    return schemas.TransactionList(
        data=[render.history_item(item) for item in page.items], has_more=page.has_more
    )


@router.post(
    "/customers",
    status_code=201,
    response_model=schemas.CustomerOut,
    responses=problems(409, 429),
    tags=["customers"],
    summary="Sign up a customer",
)
async def sign_up(
    body: schemas.CustomerCreate, request: Request, svc: Services = Depends(services_dependency)
) -> schemas.CustomerOut:
    await svc.limits.signup_attempt(client_address(request))
    created = await customers.sign_up(
        svc.db,
        email=body.email,
        password=body.password,
        region=body.region,
        name=body.name,
        clock=svc.clock,
    )
    return render.customer(created)


@router.post(
    "/sessions",
    status_code=201,
    response_model=schemas.SessionOut,
    responses=problems(401, 429),
    tags=["sessions"],
    summary="Log in (customers and staff)",
)
async def log_in(
    body: schemas.SessionCreate, request: Request, svc: Services = Depends(services_dependency)
) -> Any:
    session = await customers.log_in_limited(
        svc.db,
        svc.limits,
        email=body.email,
        password=body.password,
        address=client_address(request),
        ttl_s=svc.settings.session_ttl_s,
        clock=svc.clock,
    )
    # A session is either a customer's or a staff member's: the other key is left out.
    out = schemas.SessionOut(
        token=session.token,
        expires_at=session.expires_at,
        customer=render.customer(session.customer) if session.customer else None,
        staff=render.staff(session.staff) if session.staff else None,
    )
    return JSONResponse(
        out.model_dump(mode="json", exclude={"staff"} if session.customer else {"customer"}),
        status_code=201,
    )


@router.delete(
    "/sessions/current",
    status_code=204,
    # 403: an API key is not a session, so it cannot log out.
    responses=problems(401, 403),
    tags=["sessions"],
    summary="Log out: the token stops working",
)
async def log_out(
    who: Principal = Depends(principal), svc: Services = Depends(services_dependency)
) -> Response:
    if isinstance(who, customers.ApiKeyPrincipal):
        raise GiftcardError(ErrorCode.FORBIDDEN, "An API key is not a session.")
    await customers.log_out(svc.db, who.session_id, clock=svc.clock)
    return Response(status_code=204)


@router.get(
    "/me",
    response_model=schemas.CustomerOut,
    responses=problems(401, 403),
    tags=["me"],
    summary="The customer",
)
async def me(who: CustomerPrincipal = Depends(customer)) -> schemas.CustomerOut:
    return render.customer(who.customer)


@router.patch(
    "/me",
    response_model=schemas.CustomerOut,
    responses=problems(401, 403),
    tags=["me"],
    summary="Change the refund preference or name",
)
async def update_me(
    body: schemas.MePatch,
    who: CustomerPrincipal = Depends(customer),
    svc: Services = Depends(services_dependency),
) -> schemas.CustomerOut:
    updated = await customers.update_customer(
        svc.db,
        who.customer.id,
        refund_preference=RefundPreference(body.refund_preference)
        if body.refund_preference
        else None,
        name=body.name,
    )
    return render.customer(updated)


@router.post(
    "/me/password",
    status_code=204,
    responses=problems(401, 403, 409, 429),
    tags=["me"],
    summary="Change the password",
    description="Needs the current password: a wrong one is 401 `invalid_credentials` "
    "with `param: current_password`, and counts as a failed log-in (429 "
    "`too_many_attempts` after too many). Every other session of the customer ends; the "
    "one making this request goes on. The account's address is told of the change by "
    "email, and every password reset link not used yet stops working.",
)
async def change_password(
    body: schemas.PasswordChange,
    request: Request,
    who: CustomerPrincipal = Depends(customer),
    svc: Services = Depends(services_dependency),
) -> Response:
    await customers.change_password(
        svc.unit_of_work(),
        svc.limits,
        who,
        current_password=body.current_password,
        new_password=body.new_password,
        address=client_address(request),
    )
    return Response(status_code=204)


@router.post(
    "/me/email",
    response_model=schemas.CustomerOut,
    responses=problems(401, 403, 409, 429),
    tags=["me"],
    summary="Change the email",
    description="Needs the current password (as `POST /v1/me/password`). An address "
    "that belongs to another customer or to a staff member is 409 `email_taken` with "
    "`param: email`. The new address is the account's at once, for logging in too; the "
    "old address gets an email saying so, with the new address masked (`a•••@example."
    "com`). Sessions go on; password reset links not used yet stop working.",
)
async def change_email(
    body: schemas.EmailChange,
    request: Request,
    who: CustomerPrincipal = Depends(customer),
    svc: Services = Depends(services_dependency),
) -> schemas.CustomerOut:
    changed = await customers.change_email(
        svc.unit_of_work(),
        svc.limits,
        who,
        new_email=body.email,
        current_password=body.current_password,
        address=client_address(request),
    )
    return render.customer(changed)


@router.post(
    "/password-resets",
    status_code=202,
    response_model=schemas.PasswordResetAccepted,
    responses=problems(429),
    tags=["sessions"],
    summary="Email a link to choose a new password",
    description="Always 202 with the same body, whether or not a customer has this "
    "email (a malformed address is 422), and with the same work done, so the answer "
    "tells nothing about who has an account. A customer gets an email with a link to "
    "`/password-reset?token=…` that works once, for one hour; asking again replaces "
    "the link before. Staff addresses get no email: staff passwords are reset by an "
    "operator. Limited per client address and per email (429 `too_many_attempts`).",
)
async def request_password_reset(
    body: schemas.PasswordResetCreate,
    request: Request,
    svc: Services = Depends(services_dependency),
) -> Any:
    await account_mail.request_password_reset_limited(
        svc.unit_of_work(),
        svc.limits,
        email=body.email,
        address=client_address(request),
        secret_key=svc.settings.secret_key,
    )
    return JSONResponse(
        schemas.PasswordResetAccepted(status="accepted", detail=RESET_LINK_ACCEPTED).model_dump(),
        status_code=202,
    )


@router.post(
    "/password-resets/confirm",
    status_code=204,
    responses=problems(409),
    tags=["sessions"],
    summary="Choose a new password with a reset link's token",
    description="The password becomes `password`; the link is used up (of two requests "
    "with one token, one succeeds); every session of the customer ends; the account's "
    "address is told by email. A token that is unknown, used, replaced by a newer link "
    "or past its hour is 409 `invalid_state` with `param: token`.",
)
async def confirm_password_reset(
    body: schemas.PasswordResetConfirm, svc: Services = Depends(services_dependency)
) -> Response:
    await account_mail.reset_password(
        svc.unit_of_work(),
        token=body.token,
        password=body.password,
        secret_key=svc.settings.secret_key,
    )
    return Response(status_code=204)


RESET_LINK_ACCEPTED = (
    "If a customer account uses this email, a link to choose a new password is on its "
    "way to it. The link works once, for one hour."
)


# The busiest route's plain case, answered before FastAPI (see giftcard.api.lanes).
LANES = [Lane(route_of(router.routes, redeem), schemas.RedemptionCreate, customer, _redeem)]
