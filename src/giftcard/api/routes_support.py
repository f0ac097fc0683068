"""Support: look up a card by code, serial or last four; freeze, unfreeze, cancel, replace.

For staff sessions and API keys with role support or admin. Every call is recorded in
the audit log by its use case (:mod:`giftcard.support.cards`). Codes travel in request
bodies only, never in an address.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request

from giftcard import audit, ids
from giftcard.api import render, schemas
from giftcard.api.deps import IdempotencyKey, acting, principal, run_idempotent
from giftcard.api.problems import problems
from giftcard.cards import Card, Replacement
from giftcard.customers import Principal, Role
from giftcard.http import services_dependency
from giftcard.services import Services
from giftcard.support import cards as support_cards
from giftcard.support.cards import CardLookup
from giftcard.unit_of_work import UnitOfWork

router = APIRouter(prefix="/v1/support", tags=["support"])
support = acting(Role.SUPPORT, Role.ADMIN)


def _optional_id(prefix: str, value: int | None) -> str | None:
    return None if value is None else ids.format_id(prefix, value)


def render_lookup(value: CardLookup) -> schemas.CardLookupOut:
    into = value.redeemed_into
    credit = value.credit
    gift = value.gift
    return schemas.CardLookupOut(
        card=render.card(value.card),
        events=[
            schemas.CardEventOut(
                type=event.type,
                actor=event.actor,
                reason=event.reason,
                created_at=event.created_at,
                transaction_id=_optional_id(ids.TRANSACTION, event.transaction_id),
                customer_id=_optional_id(ids.CUSTOMER, event.customer_id),
                related_card_id=_optional_id(ids.CARD, event.related_card_id),
            )
            for event in value.events
        ],
        redeemed_into=None
        if into is None
        else schemas.RedeemedIntoOut(
            id=ids.format_id(ids.CUSTOMER, into.customer_id),
            email=into.email,
            name=into.name,
            balance=render.balance(into.balance),
        ),
        credit=None
        if credit is None
        else schemas.CreditOut(
            transaction_id=ids.format_id(ids.TRANSACTION, credit.transaction_id),
            created_at=credit.created_at,
            amount=credit.amount,
            currency=credit.currency,
            balance_after=credit.balance_after,
        ),
        gift=None
        if gift is None
        else schemas.LookupGiftOut(
            id=ids.format_id(ids.GIFT, gift.id),
            recipient_email=gift.recipient_email,
            recipient_name=gift.recipient_name,
            status=gift.status.value,
        ),
        replaces=_optional_id(ids.CARD, value.replaces_card_id),
        replaced_by=_optional_id(ids.CARD, value.replaced_by_card_id),
    )


@router.post(
    "/lookups",
    response_model=schemas.CardLookupList,
    responses=problems(401, 403, 404),
    summary="Look a card up by code, serial, or last four within a customer's cards",
    description="Send exactly one of `{code}`, `{serial}` or `{last4, customer_id}` (codes "
    "travel in bodies, never in addresses). Each card comes with every event on it, the "
    "customer it was redeemed into with their balance now, and the journal transaction "
    "that credited it. An unknown code or serial is 404 `not_found`; a code that cannot be "
    "one is 422 `code_malformed`, one with a typo 422 `code_mistyped`. Every look-up, "
    "found or not, is in the audit log (a code only by its last four).",
)
async def lookups(
    body: schemas.CardLookupCreate,
    actor: audit.Actor = Depends(support),
    svc: Services = Depends(services_dependency),
) -> Any:
    customer_id = (
        None
        if body.customer_id is None
        else ids.parse_id(ids.CUSTOMER, body.customer_id, param="customer_id")
    )
    found = await support_cards.lookup(
        svc.unit_of_work(),
        actor,
        code=body.code,
        serial=body.serial,
        last4=body.last4,
        customer_id=customer_id,
        secret_key=svc.settings.secret_key,
    )
    return schemas.CardLookupList(data=[render_lookup(item) for item in found])


async def _change_card(
    request: Request,
    card_id: str,
    body: schemas.CardChange,
    who: Principal,
    actor: audit.Actor,
    change: Callable[..., Awaitable[Card]],
) -> Any:
    number = ids.parse_id(ids.CARD, card_id, param="card_id")

    async def act(uow: UnitOfWork) -> Card:
        return await change(uow, actor, number, reason=body.reason, note=body.note)

    return await run_idempotent(
        request,
        who=who,
        body=body.model_dump(mode="json"),
        status=200,
        act=act,
        render=lambda card: render.card(card).model_dump(mode="json"),
    )


@router.post(
    "/cards/{card_id}/freeze",
    response_model=schemas.CardOut,
    responses=problems(401, 403, 404, 409),
    summary="Freeze a card: it keeps its value and cannot be redeemed until unfrozen",
    description="From `inactive` or `active`. A card redeemed, cancelled or already frozen "
    "is 409 `invalid_state`, with a sentence saying what it is.",
)
async def freeze(
    card_id: str,
    body: schemas.CardChange,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    actor: audit.Actor = Depends(support),
    who: Principal = Depends(principal),
) -> Any:
    return await _change_card(request, card_id, body, who, actor, support_cards.freeze)


@router.post(
    "/cards/{card_id}/unfreeze",
    response_model=schemas.CardOut,
    responses=problems(401, 403, 404, 409),
    summary="Unfreeze a card: it returns to the state it had before it was frozen",
    description="A card that is not frozen is 409 `invalid_state`.",
)
async def unfreeze(
    card_id: str,
    body: schemas.CardChange,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    actor: audit.Actor = Depends(support),
    who: Principal = Depends(principal),
) -> Any:
    return await _change_card(request, card_id, body, who, actor, support_cards.unfreeze)


@router.post(
    "/cards/{card_id}/cancel",
    response_model=schemas.CardOut,
    responses=problems(401, 403, 404, 409),
    summary="Cancel a card for good; a funded card's value goes back to the store",
    description="From `inactive`, `active` (expired too) or `frozen`. Permanent: the card "
    "can never be redeemed again. A redeemed or cancelled card is 409 `invalid_state`.",
)
async def cancel(
    card_id: str,
    body: schemas.CardChange,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    actor: audit.Actor = Depends(support),
    who: Principal = Depends(principal),
) -> Any:
    return await _change_card(request, card_id, body, who, actor, support_cards.cancel)


def _replacement(value: Replacement, *, with_code: bool) -> dict[str, Any]:
    return schemas.ReplacementOut(
        replaced=render.card(value.old),
        card=render.issued_card(value.new, with_code=with_code),
    ).model_dump(mode="json")


@router.post(
    "/cards/{card_id}/replace",
    status_code=201,
    response_model=schemas.ReplacementOut,
    responses=problems(401, 403, 404, 409),
    summary="Replace a lost or damaged card: cancel it and issue a new code for its value",
    description="For a card that still holds its value: `active` and not expired, or "
    "`frozen` after it was sold. In one transaction the card is cancelled and a new "
    "digital, active card of the same value, region and expiry is issued. The new code is "
    "in this response only; a response replayed for a repeated Idempotency-Key has null "
    "there. A redeemed, cancelled, expired or never-sold card is 409 `invalid_state`.",
)
async def replace(
    card_id: str,
    body: schemas.CardChange,
    request: Request,
    idempotency_key: IdempotencyKey = None,
    actor: audit.Actor = Depends(support),
    who: Principal = Depends(principal),
    svc: Services = Depends(services_dependency),
) -> Any:
    number = ids.parse_id(ids.CARD, card_id, param="card_id")

    async def act(uow: UnitOfWork) -> Replacement:
        return await support_cards.replace(
            uow,
            actor,
            number,
            reason=body.reason,
            note=body.note,
            secret_key=svc.settings.secret_key,
        )

    return await run_idempotent(
        request,
        who=who,
        body=body.model_dump(mode="json"),
        status=201,
        act=act,
        render=lambda value: _replacement(value, with_code=True),
        # Codes are never stored: a replay names the new card but not its code.
        render_stored=lambda value: _replacement(value, with_code=False),
    )
