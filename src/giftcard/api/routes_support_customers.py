"""Support: find customers, read their balance and history, adjust balances (with a
second staff member's approval above a threshold), correct a gift's recipient.

Every route admits API keys and staff sessions with role support or admin; approving an
adjustment needs a staff member's session (the use case refuses a key)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from giftcard import audit, ids
from giftcard.api import render, schemas
from giftcard.api.deps import IdempotencyKey, acting, principal, run_idempotent
from giftcard.api.problems import problems
from giftcard.api.routes_gifts import render_gift
from giftcard.customers import Principal, Role
from giftcard.history import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX
from giftcard.http import services_dependency
from giftcard.services import Services
from giftcard.support import adjustments
from giftcard.support import customers as support
from giftcard.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1/support", tags=["support"])
staff = acting(Role.SUPPORT, Role.ADMIN)

Limit = Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX)]
Cursor = Annotated[str | None, Query(max_length=40)]


def render_customer(summary: support.CustomerSummary) -> dict[str, Any]:
    return {
        **render.customer(summary.customer).model_dump(mode="json"),
        "balance": render.balance(summary.balance).model_dump(mode="json"),
        "created_at": summary.customer.created_at,
    }


def render_adjustment(value: adjustments.Adjustment) -> dict[str, Any]:
    return schemas.AdjustmentOut(
        id=value.public_id,
        status=value.status.value,
        amount=value.amount,
        currency=value.currency,
        reason=value.reason.value,
        note=value.note,
        created_by=value.created_by,
        customer_id=ids.format_id(ids.CUSTOMER, value.customer_id),
        decided_by=value.decided_by,
        decided_at=value.decided_at,
        decision_note=value.decision_note,
        transaction_id=None
        if value.transaction_id is None
        else ids.format_id(ids.TRANSACTION, value.transaction_id),
        created_at=value.created_at,
    ).model_dump(mode="json")


@router.get(
    "/customers",
    response_model=schemas.SupportCustomerList,
    responses=problems(401, 403, 422),
    summary="Find customers by email: a whole address exactly, or its beginning",
)
async def find_customers(
    email: Annotated[str, Query(max_length=support.SEARCH_LENGTH_MAX + 50)],
    actor: audit.Actor = Depends(staff),
    svc: Services = Depends(services_dependency),
    limit: Annotated[int, Query(ge=1, le=support.SEARCH_LIMIT_MAX)] = support.SEARCH_LIMIT_DEFAULT,
) -> Any:
    found = await support.find(svc.unit_of_work(), actor, email, limit=limit)
    return {"data": [render_customer(item) for item in found.items], "has_more": found.has_more}


@router.get(
    "/customers/{customer_id}",
    response_model=schemas.SupportCustomerDetail,
    responses=problems(401, 403, 404),
    summary="A customer with their balance, latest history, cards, gifts, payments, adjustments",
)
async def get_customer(
    customer_id: str,
    actor: audit.Actor = Depends(staff),
    svc: Services = Depends(services_dependency),
) -> Any:
    number = ids.parse_id(ids.CUSTOMER, customer_id)
    found = await support.detail(svc.unit_of_work(), actor, number)
    summary = support.CustomerSummary(found.customer, found.balance)
    return {
        **render_customer(summary),
        "transactions": {
            "data": [
                render.history_item(item).model_dump(mode="json") for item in found.history.items
            ],
            "has_more": found.history.has_more,
        },
        "cards_redeemed": [
            schemas.RedeemedCardOut(
                id=ids.format_id(ids.CARD, card.card_id),
                serial=card.serial,
                last4=card.last4,
                amount=card.amount,
                currency=card.currency,
                redeemed_at=card.redeemed_at,
            ).model_dump(mode="json")
            for card in found.cards_redeemed
        ],
        "gifts": [render_gift(gift) for gift in found.gifts],
        "payments": [
            schemas.PaymentSummaryOut(
                id=ids.format_id(ids.PAYMENT, payment.id),
                order_id=payment.order_id,
                status=payment.status,
                amount=payment.amount,
                currency=payment.currency,
                gift_card_amount=payment.gift_card_amount,
                captured_amount=payment.captured_amount,
                refunded_amount=payment.refunded_amount,
                created_at=payment.created_at,
            ).model_dump(mode="json")
            for payment in found.payments
        ],
        "adjustments": [render_adjustment(item) for item in found.adjustments],
    }


@router.get(
    "/customers/{customer_id}/transactions",
    response_model=schemas.TransactionList,
    responses=problems(401, 403, 404, 422),
    summary="A customer's full history, newest first, a page at a time",
)
async def customer_transactions(
    customer_id: str,
    actor: audit.Actor = Depends(staff),
    svc: Services = Depends(services_dependency),
    limit: Limit = PAGE_SIZE_DEFAULT,
    starting_after: Cursor = None,
) -> Any:
    number = ids.parse_id(ids.CUSTOMER, customer_id)
    found = await support.customer_history(
        svc.unit_of_work(),
        actor,
        number,
        limit=limit,
        starting_after=ids.parse_cursor(ids.TRANSACTION, starting_after),
    )
    return {
        "data": [render.history_item(item).model_dump(mode="json") for item in found.page.items],
        "has_more": found.page.has_more,
    }


@router.post(
    "/customers/{customer_id}/adjustments",
    status_code=201,
    response_model=schemas.AdjustmentOut,
    responses=problems(401, 403, 404, 409, 422),
    summary="Adjust a customer's balance: applied at once, or waiting for a second staff "
    "member's approval above GIFTCARD_ADJUSTMENT_APPROVAL_MINOR",
)
async def create_adjustment(
    customer_id: str,
    body: schemas.AdjustmentCreate,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    actor: audit.Actor = Depends(staff),
    who: Principal = Depends(principal),
    svc: Services = Depends(services_dependency),
) -> Any:
    number = ids.parse_id(ids.CUSTOMER, customer_id)
    # Refused before the unit of work, so that a malformed request is never remembered.
    adjustments.check_amount(body.amount)
    adjustments.check_note(body.note)

    async def act(uow: UnitOfWork) -> adjustments.Adjustment:
        return await adjustments.create(
            uow,
            actor,
            number,
            amount=body.amount,
            currency=body.currency,
            reason=body.reason,
            note=body.note,
            approval_minor=svc.settings.adjustment_approval_minor,
        )

    return await run_idempotent(
        request,
        who=who,
        body=body.model_dump(),
        status=201,
        act=act,
        render=render_adjustment,
    )


@router.get(
    "/adjustments",
    response_model=schemas.AdjustmentList,
    responses=problems(401, 403, 422),
    summary="Adjustments newest first; ?status=pending_approval is the approval queue",
)
async def list_adjustments(
    actor: audit.Actor = Depends(staff),
    svc: Services = Depends(services_dependency),
    status: Literal["pending_approval", "applied", "rejected"] | None = None,
    limit: Limit = adjustments.PAGE_SIZE_DEFAULT,
    starting_after: Cursor = None,
) -> Any:
    page = await adjustments.list_adjustments(
        svc.db,
        status=None if status is None else adjustments.Status(status),
        limit=limit,
        starting_after=ids.parse_cursor(ids.ADJUSTMENT, starting_after),
    )
    return {"data": [render_adjustment(item) for item in page.items], "has_more": page.has_more}


@router.get(
    "/adjustments/{adjustment_id}",
    response_model=schemas.AdjustmentOut,
    responses=problems(401, 403, 404),
    summary="One adjustment",
)
async def get_adjustment(
    adjustment_id: str,
    actor: audit.Actor = Depends(staff),
    svc: Services = Depends(services_dependency),
) -> Any:
    found = await adjustments.get(svc.db, ids.parse_id(ids.ADJUSTMENT, adjustment_id))
    return render_adjustment(found)


@router.post(
    "/adjustments/{adjustment_id}/approve",
    response_model=schemas.AdjustmentOut,
    responses=problems(401, 403, 404, 409, 422),
    summary="Approve a pending adjustment (a staff member other than its creator); it is "
    "applied at once",
)
async def approve_adjustment(
    adjustment_id: str,
    request: Request,
    body: schemas.AdjustmentDecision | None = None,
    idempotency_key: IdempotencyKey = None,
    actor: audit.Actor = Depends(staff),
    who: Principal = Depends(principal),
) -> Any:
    number = ids.parse_id(ids.ADJUSTMENT, adjustment_id)
    note = None if body is None else body.note

    async def act(uow: UnitOfWork) -> adjustments.Adjustment:
        return await adjustments.approve(uow, actor, number, note=note)

    return await run_idempotent(
        request,
        who=who,
        body=None if body is None else body.model_dump(),
        status=200,
        act=act,
        render=render_adjustment,
    )


@router.post(
    "/adjustments/{adjustment_id}/reject",
    response_model=schemas.AdjustmentOut,
    responses=problems(401, 403, 404, 409, 422),
    summary="Reject a pending adjustment (its creator may withdraw their own this way)",
)
async def reject_adjustment(
    adjustment_id: str,
    body: schemas.AdjustmentDecision | None = None,
    actor: audit.Actor = Depends(staff),
    svc: Services = Depends(services_dependency),
) -> Any:
    number = ids.parse_id(ids.ADJUSTMENT, adjustment_id)
    found = await adjustments.reject(
        svc.unit_of_work(), actor, number, note=None if body is None else body.note
    )
    return render_adjustment(found)


@router.post(
    "/gifts/{gift_id}/recipient",
    response_model=schemas.GiftOut,
    responses=problems(401, 403, 404, 409, 422),
    summary="Correct a gift's recipient: an unsent gift goes to the new address; a sent, "
    "unredeemed one gets a new code there",
)
async def correct_recipient(
    gift_id: str,
    body: schemas.RecipientCorrection,
    actor: audit.Actor = Depends(staff),
    svc: Services = Depends(services_dependency),
) -> Any:
    number = ids.parse_id(ids.GIFT, gift_id)
    corrected = await support.correct_gift_recipient(
        svc.unit_of_work(),
        actor,
        number,
        recipient_email=body.recipient_email,
        recipient_name=body.recipient_name,
        secret_key=svc.settings.secret_key,
    )
    return render_gift(corrected.gift)
