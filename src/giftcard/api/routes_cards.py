"""Issuing and activating cards: for the store's back end (API keys admin, merchant)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from giftcard import audit, cards, ids
from giftcard.api import render, schemas
from giftcard.api.deps import IdempotencyKey, acting, roles, run_idempotent
from giftcard.api.problems import problems
from giftcard.customers import Principal, Role
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.http import services_dependency
from giftcard.money import region as find_region
from giftcard.services import Services
from giftcard.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1/cards", tags=["cards"])
merchant = roles(Role.ADMIN, Role.MERCHANT)
# The same callers, as the audit log names them: issuing and activating are recorded.
merchant_actor = acting(Role.ADMIN, Role.MERCHANT)


@router.post(
    "",
    status_code=201,
    response_model=schemas.IssuedCardList,
    responses=problems(401, 403, 409),
    summary="Issue cards (digital are active, physical inactive until sold)",
)
async def issue(
    body: schemas.CardCreate,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    who: Principal = Depends(merchant),
    actor: audit.Actor = Depends(merchant_actor),
    svc: Services = Depends(services_dependency),
) -> Any:
    store = find_region(body.region)
    if body.currency is not None and body.currency != store.currency:
        raise GiftcardError(
            ErrorCode.CURRENCY_MISMATCH,
            f"Cards of the {store.store_name} are in {store.currency}, not {body.currency}.",
            param="currency",
        )
    issue_request = cards.IssueRequest(
        amount=body.amount,
        region=store,
        kind=cards.CardKind(body.kind),
        count=body.count,
        expires_at=body.expires_at,
    )

    async def act(uow: UnitOfWork) -> list[cards.IssuedCard]:
        return await cards.issue(
            uow,
            issue_request,
            secret_key=svc.settings.secret_key,
            actor=who.actor,
            audit_actor=actor,
        )

    return await run_idempotent(
        request,
        who=who,
        body=body.model_dump(mode="json"),
        status=201,
        act=act,
        render=lambda issued: _issued_list(issued, with_codes=True),
        # Codes are never stored, so a replay names the cards issued but not their codes.
        render_stored=lambda issued: _issued_list(issued, with_codes=False),
    )


def _issued_list(issued: list[cards.IssuedCard], *, with_codes: bool) -> dict[str, Any]:
    return schemas.IssuedCardList(
        data=[render.issued_card(card, with_code=with_codes) for card in issued]
    ).model_dump(mode="json")


@router.post(
    "/activate",
    response_model=schemas.CardOut,
    responses=problems(401, 403, 404, 409),
    summary="Activate a physical card sold at a till",
)
async def activate(
    body: schemas.CardActivate,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    who: Principal = Depends(merchant),
    actor: audit.Actor = Depends(merchant_actor),
    svc: Services = Depends(services_dependency),
) -> Any:
    async def act(uow: UnitOfWork) -> cards.Card:
        return await cards.activate(uow, body.serial, actor=who.actor, audit_actor=actor)

    return await run_idempotent(
        request,
        who=who,
        body=body.model_dump(mode="json"),
        status=200,
        act=act,
        render=lambda card: render.card(card).model_dump(mode="json"),
    )


@router.get(
    "/{card_id}",
    response_model=schemas.CardOut,
    responses=problems(401, 403, 404),
    summary="A card, without its code",
)
async def get_card(
    card_id: str, who: Principal = Depends(merchant), svc: Services = Depends(services_dependency)
) -> schemas.CardOut:
    return render.card(await cards.get(svc.db, ids.parse_id(ids.CARD, card_id), clock=svc.clock))
