"""Checkout: the store's back end applies a customer's balance to an order (API keys
admin, merchant)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from giftcard import ids, payments
from giftcard.api import render, schemas
from giftcard.api.deps import IdempotencyKey, roles, run_idempotent
from giftcard.api.lanes import Lane, route_of
from giftcard.api.problems import problems
from giftcard.customers import Principal, Role
from giftcard.http import services, services_dependency
from giftcard.services import Services
from giftcard.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1/payments", tags=["payments"])
merchant = roles(Role.ADMIN, Role.MERCHANT)


@router.post(
    "",
    status_code=201,
    response_model=schemas.PaymentOut,
    responses=problems(401, 403, 404, 409),
    summary="Pay for an order with the balance, alone or with another payment method",
)
async def create_payment(
    body: schemas.PaymentCreate,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    who: Principal = Depends(merchant),
) -> Any:
    return await _create_payment(request, body, who)


async def _create_payment(
    request: Request, body: schemas.PaymentCreate, who: Principal
) -> Response:
    """What `create_payment` answers; also what its lane answers (see
    :mod:`giftcard.api.lanes`)."""
    svc = services(request)
    payment_request = payments.PaymentRequest(
        customer_id=ids.parse_id(ids.CUSTOMER, body.customer_id, param="customer_id"),
        order_id=body.order_id,
        amount=body.amount,
        currency=body.currency,
        use_balance=body.use_balance,
        capture=body.capture,
    )

    async def act(uow: UnitOfWork) -> payments.Payment:
        return await payments.create(
            uow, payment_request, hold_ttl_s=svc.settings.hold_ttl_s, actor=who.actor
        )

    return await run_idempotent(
        request, who=who, body=body.model_dump(), status=201, act=act, render=render.payment
    )


@router.post(
    "/{payment_id}/capture",
    response_model=schemas.PaymentOut,
    responses=problems(401, 403, 404, 409),
    summary="Capture an authorized payment, in full or in part (the rest is released)",
)
async def capture_payment(
    payment_id: str,
    request: Request,
    body: schemas.PaymentCapture | None = None,
    idempotency_key: IdempotencyKey = None,
    who: Principal = Depends(merchant),
    svc: Services = Depends(services_dependency),
) -> Any:
    number = ids.parse_id(ids.PAYMENT, payment_id)
    amount = body.amount if body else None

    async def act(uow: UnitOfWork) -> payments.Payment:
        return await payments.capture(uow, number, amount=amount, actor=who.actor)

    return await run_idempotent(
        request,
        who=who,
        body=body.model_dump() if body else None,
        status=200,
        act=act,
        render=render.payment,
    )


@router.post(
    "/{payment_id}/void",
    response_model=schemas.PaymentOut,
    responses=problems(401, 403, 404, 409),
    summary="Cancel an authorized payment: its hold goes back to the balance",
)
async def void_payment(
    payment_id: str,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    who: Principal = Depends(merchant),
    svc: Services = Depends(services_dependency),
) -> Any:
    number = ids.parse_id(ids.PAYMENT, payment_id)

    async def act(uow: UnitOfWork) -> payments.Payment:
        return await payments.void(uow, number, actor=who.actor)

    return await run_idempotent(
        request, who=who, body=None, status=200, act=act, render=render.payment
    )


@router.post(
    "/{payment_id}/refunds",
    status_code=201,
    response_model=schemas.RefundOut,
    responses=problems(401, 403, 404, 409),
    summary="Refund part or all of a captured payment",
)
async def refund_payment(
    payment_id: str,
    body: schemas.RefundCreate,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    who: Principal = Depends(merchant),
    svc: Services = Depends(services_dependency),
) -> Any:
    number = ids.parse_id(ids.PAYMENT, payment_id)

    async def act(uow: UnitOfWork) -> payments.Refund:
        return await payments.refund(uow, number, amount=body.amount, actor=who.actor)

    return await run_idempotent(
        request,
        who=who,
        body=body.model_dump(),
        status=201,
        act=act,
        render=lambda made: render.refund(made).model_dump(mode="json"),
    )


@router.get(
    "/{payment_id}",
    response_model=schemas.PaymentOut,
    responses=problems(401, 403, 404),
    summary="A payment with its refunds",
)
async def get_payment(
    payment_id: str,
    who: Principal = Depends(merchant),
    svc: Services = Depends(services_dependency),
) -> Any:
    return render.payment(await payments.get(svc.db, ids.parse_id(ids.PAYMENT, payment_id)))


@router.get(
    "/{payment_id}/refunds",
    response_model=schemas.RefundList,
    responses=problems(401, 403, 404),
    summary="A payment's refunds, newest first",
)
async def list_refunds(
    payment_id: str,
    who: Principal = Depends(merchant),
    svc: Services = Depends(services_dependency),
    limit: Annotated[
        int, Query(ge=1, le=payments.REFUND_PAGE_SIZE_MAX)
    ] = payments.REFUND_PAGE_SIZE_DEFAULT,
    starting_after: Annotated[str | None, Query(max_length=40)] = None,
) -> schemas.RefundList:
    page = await payments.list_refunds(
        svc.db,
        ids.parse_id(ids.PAYMENT, payment_id),
        limit=limit,
        starting_after=ids.parse_cursor(ids.REFUND, starting_after),
    )
    return schemas.RefundList(
        data=[render.refund(item) for item in page.items], has_more=page.has_more
    )


# Checkout's plain case, answered before FastAPI (see giftcard.api.lanes).
LANES = [
    Lane(route_of(router.routes, create_payment), schemas.PaymentCreate, merchant, _create_payment)
]
