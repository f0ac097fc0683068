"""Console pages for cards: the look-up result, freeze, unfreeze, cancel and replace.

A code typed on the home page is looked up from the form's body and the agent is sent
to the card's page by its id: a code never enters an address. After a replacement the
new code is shown on the answer to the form itself, once, never through a redirect or a
cookie.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from giftcard import audit, codes, ids
from giftcard.cards import Card, CardState
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.http import services
from giftcard.support import cards as support_cards
from giftcard.support.cards import CardLookup
from giftcard.unit_of_work import UnitOfWork
from giftcard.web.security import checked_form, text_field
from giftcard.web.support.session import HOME, actor, console_page, money, require_staff, when
from giftcard.web.templating import redirect

router = APIRouter(prefix=HOME, include_in_schema=False)

CARDS = HOME + "/cards"
# Far longer than any code or serial however it is typed; longer input is cut, then refused.
QUERY_LENGTH_MAX = 100
REASON_INPUT_LENGTH_MAX = support_cards.REASON_LENGTH_MAX + 100
NOTE_INPUT_LENGTH_MAX = support_cards.NOTE_LENGTH_MAX + 100


def card_path(card_id: int) -> str:
    return f"{CARDS}/{ids.format_id(ids.CARD, card_id)}"


# --- looking up ----------------------------------------------------------------------


@router.post("/lookup", response_class=HTMLResponse)
async def lookup(request: Request) -> Response:
    form = await checked_form(request)
    staff = await require_staff(request)
    query = text_field(form, "query", length_max=QUERY_LENGTH_MAX)
    if not query.strip():
        return _home_refusal(
            request, query, "Enter the code, or the 12-digit serial from the back of the card."
        )
    svc = services(request)
    # Digits only is a serial (a code has letters too, but for one in ~30 billion codes):
    # a serial typed a digit short is then told so, not called a malformed code.
    compact = "".join(query.split()).replace("-", "")
    is_serial = compact.isascii() and compact.isdigit() and len(compact) != codes.CODE_LENGTH
    try:
        found = await support_cards.lookup(
            svc.unit_of_work(),
            actor(request, staff),
            serial=query if is_serial else None,
            code=None if is_serial else query,
            secret_key=svc.settings.secret_key,
        )
    except GiftcardError as error:
        return _home_refusal(request, query, error.detail, status=error.status)
    return redirect(request, card_path(found[0].card.id))


def _home_refusal(request: Request, query: str, sentence: str, *, status: int = 422) -> Response:
    return console_page(
        request,
        "support/home.html",
        "lookup",
        {"values": {"query": query}, "errors": {"query": sentence}},
        status=status,
    )


@router.get("/cards/{card_id}", response_class=HTMLResponse)
async def card_page(request: Request, card_id: str) -> Response:
    staff = await require_staff(request)
    number = ids.parse_id(ids.CARD, card_id)
    return await _card_page(request, actor(request, staff), number)


async def _card_page(
    request: Request,
    who: audit.Actor,
    card_id: int,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
    status: int = 200,
) -> Response:
    """The card's page; every showing of it is a look-up by id in the audit log."""
    svc = services(request)
    [found] = await support_cards.lookup(svc.unit_of_work(), who, card_id=card_id)
    context: dict[str, Any] = {
        "found": found,
        "card": found.card,
        "answer": redeemed_answer(found),
        "actions": available_actions(found.card, svc.clock.now()),
        "card_path": card_path,
        "values": values or {},
        "errors": errors or {},
        "problem": problem,
    }
    return console_page(request, "support/card.html", "lookup", context, status=status)


def redeemed_answer(found: CardLookup) -> str:
    """The answer to "was it already redeemed?", in one sentence, for the top of the page."""
    card = found.card
    value = money(card.amount, card.currency)
    into, credit = found.redeemed_into, found.credit
    if card.state is CardState.REDEEMED and into is not None:
        customer = ids.format_id(ids.CUSTOMER, into.customer_id)
        sentence = f"Redeemed on {when(card.redeemed_at)} into {into.email}'s account ({customer})"
        if credit is not None:
            sentence += (
                f" — journal transaction {ids.format_id(ids.TRANSACTION, credit.transaction_id)}"
                f" credited {money(credit.amount, credit.currency)}"
            )
        total = into.balance
        return sentence + f"; their balance now {money(total.available, total.currency)}."
    if card.state is CardState.ACTIVE:
        until = f" until {when(card.expires_at)}" if card.expires_at else ""
        return f"Not redeemed: the card is active and can be redeemed for {value}{until}."
    if card.state is CardState.EXPIRED:
        return (
            f"Not redeemed: the card expired on {when(card.expires_at)} with {value} on it; "
            "it can no longer be redeemed."
        )
    if card.state is CardState.FROZEN:
        return "Not redeemed: the card is frozen and cannot be redeemed until it is unfrozen."
    if card.state is CardState.INACTIVE:
        return "Not redeemed: the card was never sold (inactive), so it holds no value yet."
    sentence = "Not redeemed: the card is cancelled and can never be redeemed."
    if found.replaced_by_card_id is not None:
        replacement = ids.format_id(ids.CARD, found.replaced_by_card_id)
        sentence += f" Its value moved to {replacement}, issued in its place."
    return sentence


def available_actions(card: Card, now: datetime) -> list[str]:
    """The changes the card's state allows, in the order the page offers them."""
    state = card.state
    actions = []
    if state in (CardState.INACTIVE, CardState.ACTIVE, CardState.EXPIRED):
        actions.append("freeze")
    if state is CardState.FROZEN:
        actions.append("unfreeze")
    # A frozen card reads as frozen whatever its expiry; past it, it is not replaced.
    unexpired = card.expires_at is None or card.expires_at > now
    if state is CardState.ACTIVE or (state is CardState.FROZEN and card.activated_at and unexpired):
        actions.append("replace")
    if state in (CardState.INACTIVE, CardState.ACTIVE, CardState.EXPIRED, CardState.FROZEN):
        actions.append("cancel")
    return actions


# --- changes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """What a change did, in the flash message's words."""

    title: str
    text: str


ChangeCard = Callable[..., Awaitable[Card]]


def _froze(card: Card) -> Done:
    return Done(
        f"Card ending {card.last4} is frozen.",
        "It cannot be redeemed until it is unfrozen; it keeps its value.",
    )


def _unfroze(card: Card) -> Done:
    return Done(f"Card ending {card.last4} is unfrozen.", f"It is {card.state.value} again.")


def _cancelled(card: Card) -> Done:
    if card.activated_at is None:
        text = "It was never sold, so no money moved. It can never be activated or redeemed."
    else:
        text = (
            f"Its {money(card.amount, card.currency)} went back to the store. It can never "
            "be redeemed."
        )
    return Done(f"Card ending {card.last4} is cancelled.", text)


CHANGES: dict[str, tuple[ChangeCard, Callable[[Card], Done]]] = {
    "freeze": (support_cards.freeze, _froze),
    "unfreeze": (support_cards.unfreeze, _unfroze),
    "cancel": (support_cards.cancel, _cancelled),
}


@router.post("/cards/{card_id}/replace", response_class=HTMLResponse)
async def replace(request: Request, card_id: str) -> Response:
    form = await checked_form(request)
    staff = await require_staff(request)
    number = ids.parse_id(ids.CARD, card_id)
    reason, note = _reason_and_note(form, "replace")
    who = actor(request, staff)
    svc = services(request)
    try:
        replacement = await support_cards.replace(
            svc.unit_of_work(),
            who,
            number,
            reason=reason,
            note=note,
            secret_key=svc.settings.secret_key,
        )
    except GiftcardError as error:
        return await _refused(request, who, number, "replace", form, error)
    new = replacement.new
    return console_page(
        request,
        "support/card_replaced.html",
        "lookup",
        {
            "old": replacement.old,
            "new": new.card,
            "code": codes.format_code(new.code),
            "card_path": card_path,
        },
    )


@router.post("/cards/{card_id}/{change}", response_class=HTMLResponse)
async def change_card(request: Request, card_id: str, change: str) -> Response:
    form = await checked_form(request)
    staff = await require_staff(request)
    if change not in CHANGES:
        raise GiftcardError(ErrorCode.NOT_FOUND, "There is no such change of a card.")
    number = ids.parse_id(ids.CARD, card_id)
    reason, note = _reason_and_note(form, change)
    use_case, done = CHANGES[change]
    who = actor(request, staff)
    uow: UnitOfWork = services(request).unit_of_work()
    try:
        card = await use_case(uow, who, number, reason=reason, note=note)
    except GiftcardError as error:
        return await _refused(request, who, number, change, form, error)
    said = done(card)
    return redirect(
        request,
        card_path(number),
        flash={"level": "success", "title": said.title, "text": said.text},
    )


def _reason_and_note(form: Any, change: str) -> tuple[str, str]:
    return (
        text_field(form, f"{change}_reason", length_max=REASON_INPUT_LENGTH_MAX),
        text_field(form, f"{change}_note", length_max=NOTE_INPUT_LENGTH_MAX),
    )


async def _refused(
    request: Request,
    who: audit.Actor,
    card_id: int,
    change: str,
    form: Any,
    error: GiftcardError,
) -> Response:
    """The card's page again: a refused field's error beside it, any other refusal (the
    card changed meanwhile) at the top, above the card as it is now."""
    if error.code is ErrorCode.NOT_FOUND:
        raise error
    reason, note = _reason_and_note(form, change)
    values = {f"{change}_reason": reason, f"{change}_note": note}
    if error.code is ErrorCode.VALIDATION_ERROR and error.param in ("reason", "note"):
        errors = {f"{change}_{error.param}": error.detail}
        return await _card_page(
            request, who, card_id, values=values, errors=errors, status=error.status
        )
    return await _card_page(request, who, card_id, problem=error.detail, status=error.status)
