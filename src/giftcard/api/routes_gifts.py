"""E-gift cards: bought by the store's back end for a customer, read by staff, the store
and the buyer, resent by support or the buyer. Never with the code: only the email has it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from giftcard import audit, gifts, ids
from giftcard.api import schemas
from giftcard.api.deps import (
    IdempotencyKey,
    acting,
    customer,
    principal,
    roles,
    run_idempotent,
)
from giftcard.api.problems import problems
from giftcard.customers import ApiKeyPrincipal, CustomerPrincipal, Principal, Role, StaffPrincipal
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.http import services_dependency
from giftcard.services import Services
from giftcard.support import customers as support_customers
from giftcard.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1", tags=["gifts"])
merchant = roles(Role.ADMIN, Role.MERCHANT)
# The same callers, as the audit log names them: a gift bought is recorded.
merchant_actor = acting(Role.ADMIN, Role.MERCHANT)


def render_gift(gift: gifts.Gift, *, for_purchaser: bool = False) -> dict[str, Any]:
    """The gift as JSON; a purchaser is not shown a mail server's words."""
    return schemas.GiftOut(
        id=gift.public_id,
        card=schemas.CardRef(serial=gift.card_serial, last4=gift.card_last4),
        status=gift.status.value,
        amount=gift.amount,
        currency=gift.currency,
        region=gift.region,
        recipient_email=gift.recipient_email,
        recipient_name=gift.recipient_name,
        sender_name=gift.sender_name,
        message=gift.message,
        deliver_at=gift.deliver_at,
        sent_at=gift.sent_at,
        attempts=gift.attempts,
        last_error=None if for_purchaser else gift.last_error,
        purchaser_customer_id=None
        if gift.purchaser_customer_id is None
        else ids.format_id(ids.CUSTOMER, gift.purchaser_customer_id),
        created_at=gift.created_at,
    ).model_dump(mode="json")


def _viewer(who: Principal, allowed: tuple[Role, ...]) -> int | None:
    """None when `who` sees every gift; a customer's id when they see only their own."""
    if isinstance(who, CustomerPrincipal):
        return who.customer.id
    if who.role in allowed:
        return None
    names = ", ".join(role.value for role in allowed)
    raise GiftcardError(
        ErrorCode.FORBIDDEN, f"This needs the purchasing customer or the role {names}."
    )


@router.post(
    "/gifts",
    status_code=201,
    response_model=schemas.GiftOut,
    responses=problems(401, 403, 404, 409),
    summary="Buy an e-gift card: a funded card and its email, in one transaction",
    description="Call it after the store took payment. The card is active at once; its "
    "code is only ever in the recipient's email. With `deliver_at` the email waits until "
    "then.",
)
async def create_gift(
    body: schemas.GiftCreate,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    who: Principal = Depends(merchant),
    actor: audit.Actor = Depends(merchant_actor),
    svc: Services = Depends(services_dependency),
) -> Any:
    gift_request = gifts.GiftRequest(
        amount=body.amount,
        region=body.region,
        currency=body.currency,
        recipient_email=body.recipient_email,
        recipient_name=body.recipient_name,
        sender_name=body.sender_name,
        message=body.message,
        deliver_at=None if body.deliver_at is None else gifts.parse_deliver_at(body.deliver_at),
        purchaser_customer_id=None
        if body.purchaser_customer_id is None
        else ids.parse_id(ids.CUSTOMER, body.purchaser_customer_id, param="purchaser_customer_id"),
    )

    async def act(uow: UnitOfWork) -> gifts.Gift:
        return await gifts.create(
            uow,
            gift_request,
            secret_key=svc.settings.secret_key,
            actor=who.actor,
            audit_actor=actor,
        )

    return await run_idempotent(
        request, who=who, body=body.model_dump(), status=201, act=act, render=render_gift
    )


@router.get(
    "/gifts/{gift_id}",
    response_model=schemas.GiftOut,
    responses=problems(401, 403, 404),
    summary="A gift and how its delivery goes (staff, API keys, or its buyer)",
)
async def get_gift(
    gift_id: str, who: Principal = Depends(principal), svc: Services = Depends(services_dependency)
) -> Any:
    viewer = _viewer(who, (Role.ADMIN, Role.MERCHANT, Role.SUPPORT))
    gift = await gifts.get(svc.db, ids.parse_id(ids.GIFT, gift_id), clock=svc.clock, viewer=viewer)
    return render_gift(gift, for_purchaser=viewer is not None)


@router.post(
    "/gifts/{gift_id}/resend",
    response_model=schemas.GiftOut,
    responses=problems(401, 403, 404, 409),
    summary="Send the gift's email again, with the same code (support, admin, or its buyer)",
)
async def resend_gift(
    gift_id: str,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    who: Principal = Depends(principal),
    svc: Services = Depends(services_dependency),
) -> Any:
    viewer = _viewer(who, (Role.ADMIN, Role.SUPPORT))
    number = ids.parse_id(ids.GIFT, gift_id)

    async def act(uow: UnitOfWork) -> gifts.Gift:
        if isinstance(who, ApiKeyPrincipal | StaffPrincipal):
            # Staff and keys act for someone else: their resend goes in the audit log.
            actor = audit.Actor(
                who.actor, who.role.value, getattr(request.state, "request_id", None)
            )
            return await support_customers.resend_gift(uow, actor, number)
        return await gifts.resend(uow, number, actor=who.actor, viewer=viewer)

    return await run_idempotent(
        request,
        who=who,
        body=None,
        status=200,
        act=act,
        render=lambda gift: render_gift(gift, for_purchaser=viewer is not None),
    )


@router.get(
    "/me/gifts",
    response_model=schemas.GiftList,
    responses=problems(401, 403),
    tags=["me"],
    summary="The e-gift cards this customer bought, newest first, with delivery status",
)
async def my_gifts(
    who: CustomerPrincipal = Depends(customer),
    svc: Services = Depends(services_dependency),
    limit: Annotated[int, Query(ge=1, le=gifts.PAGE_SIZE_MAX)] = gifts.PAGE_SIZE_DEFAULT,
    starting_after: Annotated[str | None, Query(max_length=40)] = None,
) -> Any:
    page = await gifts.list_for_purchaser(
        svc.db,
        who.customer.id,
        clock=svc.clock,
        limit=limit,
        starting_after=ids.parse_cursor(ids.GIFT, starting_after),
    )
    return {
        "data": [render_gift(gift, for_purchaser=True) for gift in page.items],
        "has_more": page.has_more,
    }
