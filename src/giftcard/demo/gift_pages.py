"""The demo store's "Send a gift card": the shopper buys an e-gift card for someone,
paid with the test card, and gets a confirmation.

The gift card balance cannot buy gift cards (that would turn store credit back into a
code anyone can spend), so the page takes the test card only and says so.

A delivery date means 09:00 on that day in the time zone the shopper picks for the
recipient (their store's zones are offered): a date is what people choose for a
birthday, and 09:00 is when a greeting is welcome. Today's date, once 09:00 has passed
there, sends the gift now.

The form carries a one-time id used as the purchase's idempotency key: sent twice
(reload, back button, double click), it buys one gift.
"""

from __future__ import annotations

import json
import secrets
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from giftcard import gifts, idempotency, ids
from giftcard.customers import CustomerPrincipal
from giftcard.demo.layout import STORE_PAGE, store_page
from giftcard.errors import ErrorCode, GiftcardError, validation_error
from giftcard.http import services
from giftcard.money import (
    AMOUNT_INPUT_LENGTH_MAX,
    REGIONS,
    example_amount,
    gift_amount_range,
    parse_amount,
)
from giftcard.web.security import checked_form, require_shopper, text_field
from giftcard.web.templating import money_for, redirect

router = APIRouter(include_in_schema=False)

GIFT_PAGE = STORE_PAGE + "/gift"
GIFTS_PAGE = STORE_PAGE + "/gifts"
DELIVERY_HOUR = time(9, 0)
FORM_ID_PREFIX = "gfo_"
FORM_ID_LENGTH = len(FORM_ID_PREFIX) + 32
EMAIL_INPUT_LENGTH_MAX = 320
DATE_INPUT_LENGTH_MAX = 10

# Each store's time zones, the first one its default.
TIME_ZONES: dict[str, tuple[tuple[str, str], ...]] = {
    "US": (
        ("America/New_York", "Eastern"),
        ("America/Chicago", "Central"),
        ("America/Denver", "Mountain"),
        ("America/Phoenix", "Arizona"),
        ("America/Los_Angeles", "Pacific"),
        ("America/Anchorage", "Alaska"),
        ("Pacific/Honolulu", "Hawaii"),
    ),
    "GB": (("Europe/London", "UK time"),),
    "DE": (("Europe/Berlin", "German time"),),
    "FR": (("Europe/Paris", "French time"),),
    "JP": (("Asia/Tokyo", "Japan time"),),
    "CA": (
        ("America/Toronto", "Eastern"),
        ("America/Halifax", "Atlantic"),
        ("America/St_Johns", "Newfoundland"),
        ("America/Winnipeg", "Central"),
        ("America/Edmonton", "Mountain"),
        ("America/Vancouver", "Pacific"),
    ),
    "AU": (
        ("Australia/Sydney", "Sydney, Melbourne, Canberra"),
        ("Australia/Brisbane", "Brisbane"),
        ("Australia/Adelaide", "Adelaide"),
        ("Australia/Darwin", "Darwin"),
        ("Australia/Perth", "Perth"),
    ),
    "IN": (("Asia/Kolkata", "India time"),),
}

# The use case's fields and the form's, where they differ.
_FORM_FIELDS = {"deliver_at": "send_on"}
_FIELDS = (
    "amount",
    "recipient_email",
    "recipient_name",
    "sender_name",
    "message",
    "when",
    "send_on",
    "time_zone",
)


def new_form_id() -> str:
    return FORM_ID_PREFIX + secrets.token_hex(16)


def _is_form_id(text: str) -> bool:
    hex_part = text.removeprefix(FORM_ID_PREFIX)
    return (
        text.startswith(FORM_ID_PREFIX)
        and len(text) == FORM_ID_LENGTH
        and all(character in "0123456789abcdef" for character in hex_part)
    )


def _read_form(form: FormData) -> dict[str, str]:
    lengths = {
        "amount": AMOUNT_INPUT_LENGTH_MAX + 1,
        "recipient_email": EMAIL_INPUT_LENGTH_MAX,
        "recipient_name": gifts.NAME_LENGTH_MAX + 1,
        "sender_name": gifts.NAME_LENGTH_MAX + 1,
        # Room for line breaks sent as CR LF: the use case counts them once.
        "message": 2 * gifts.MESSAGE_LENGTH_MAX + 1,
        "when": 10,
        "send_on": DATE_INPUT_LENGTH_MAX + 1,
        "time_zone": 40,
    }
    return {name: text_field(form, name, length_max=lengths[name]) for name in _FIELDS}


def deliver_at(values: dict[str, str], region: str, now: datetime) -> datetime | None:
    """When to send: None for now, else 09:00 on the chosen date in the chosen zone."""
    if values.get("when") != "later":
        return None
    zones = dict(TIME_ZONES[region])
    zone_name = values.get("time_zone", "")
    if zone_name not in zones:
        raise validation_error("Choose the recipient's time zone.", "time_zone")
    try:
        day = date.fromisoformat(values.get("send_on", ""))
    except ValueError:
        raise validation_error("Choose the day to send the gift on.", "send_on") from None
    zone = ZoneInfo(zone_name)
    moment = datetime.combine(day, DELIVERY_HOUR, tzinfo=zone)
    today = now.astimezone(zone).date()
    if day < today:
        raise validation_error("That day has passed. Choose today or a later day.", "send_on")
    if day == today and moment <= now:
        return None
    return moment


def _gift_request(
    values: dict[str, str], shopper: CustomerPrincipal, now: datetime
) -> gifts.GiftRequest:
    region = shopper.customer.region
    if not values["amount"].strip():
        raise validation_error("Enter the gift card's amount.", "amount")
    return gifts.GiftRequest(
        amount=parse_amount(values["amount"], region),
        region=region,
        recipient_email=values["recipient_email"],
        recipient_name=values["recipient_name"],
        sender_name=values["sender_name"],
        message=values["message"],
        deliver_at=deliver_at(values, region, now),
        purchaser_customer_id=shopper.customer.id,
    )


def _gift_page(
    request: Request,
    shopper: CustomerPrincipal,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
    form_id: str | None = None,
    status: int = 200,
) -> Response:
    region = shopper.customer.region
    store = REGIONS[region]
    smallest, largest = gift_amount_range(store)
    money = money_for(shopper)
    defaults = {
        "when": "now",
        "sender_name": shopper.customer.name or "",
        "time_zone": TIME_ZONES[region][0][0],
    }
    return store_page(
        request,
        "store_gift.html",
        "gift",
        {
            "values": {**defaults, **(values or {})},
            "errors": errors or {},
            "problem": problem,
            "form_id": form_id or new_form_id(),
            "time_zones": TIME_ZONES[region],
            "amount_hint": f"From {money(smallest, store.currency)} to "
            f"{money(largest, store.currency)}; write it like {example_amount(store)}.",
            "message_length_max": gifts.MESSAGE_LENGTH_MAX,
            "currency": store.currency,
        },
        status=status,
    )


@router.get(GIFT_PAGE, response_class=HTMLResponse)
async def gift_form(request: Request) -> Response:
    shopper = await require_shopper(request)
    return _gift_page(request, shopper)


@router.post(GIFT_PAGE, response_class=HTMLResponse)
async def send_gift(request: Request) -> Response:
    form = await checked_form(request)
    shopper = await require_shopper(request)
    svc = services(request)
    values = _read_form(form)
    form_id = text_field(form, "form_id", length_max=FORM_ID_LENGTH + 1)
    if not _is_form_id(form_id):
        return _gift_page(
            request,
            shopper,
            values=values,
            problem="This form was incomplete, so nothing was bought. Check it and send it again.",
            status=422,
        )
    keyed = idempotency.KeyedRequest(
        scope=shopper.actor,
        key=form_id,
        fingerprint=idempotency.fingerprint(
            svc.settings.secret_key, "POST", GIFT_PAGE, {"values": values}
        ),
        answer=lambda gift: idempotency.StoredResponse(201, json.dumps({"id": gift.public_id})),
        refusal=lambda error: idempotency.StoredResponse(
            error.status, json.dumps({"code": error.code.value, "detail": error.detail})
        ),
    )
    try:
        gift_request = _gift_request(values, shopper, svc.clock.now())
        gift = await gifts.create(
            svc.unit_of_work(keyed),
            gift_request,
            secret_key=svc.settings.secret_key,
            actor=f"demo_store:{shopper.actor}",
        )
    except idempotency.Replayed as replayed:
        return _after_replay(request, shopper, values, replayed.response)
    except GiftcardError as error:
        if error.code is ErrorCode.IDEMPOTENCY_KEY_REUSED:
            return _gift_page(
                request,
                shopper,
                values=values,
                problem="This form bought a gift already, so it was not sent again. Check "
                "the details below and send them as a new gift if you meant to.",
                status=409,
            )
        field = _FORM_FIELDS.get(error.param or "", error.param)
        known = field in _FIELDS
        return _gift_page(
            request,
            shopper,
            values=values,
            errors={field: error.detail} if known and field else None,
            problem=None if known else error.detail,
            form_id=form_id,
            status=error.status,
        )
    return _to_gift(request, gift.public_id, flash_title="Your gift card is bought.")


def _after_replay(
    request: Request,
    shopper: CustomerPrincipal,
    values: dict[str, str],
    stored: idempotency.StoredResponse,
) -> Response:
    body = json.loads(stored.body)
    if stored.status == 201:
        return _to_gift(request, body["id"], flash_title="This gift was bought already.")
    return _gift_page(
        request, shopper, values=values, problem=str(body.get("detail")), status=stored.status
    )


def _to_gift(request: Request, gift_id: str, *, flash_title: str) -> Response:
    return redirect(
        request,
        f"{GIFTS_PAGE}/{gift_id}",
        flash={"level": "success", "title": flash_title, "text": "", "placed": True},
    )


@router.get(GIFTS_PAGE + "/{gift_id}", response_class=HTMLResponse)
async def gift_confirmation(request: Request, gift_id: str) -> Response:
    shopper = await require_shopper(request)
    svc = services(request)
    try:
        gift = await gifts.get(
            svc.db, ids.parse_id(ids.GIFT, gift_id), clock=svc.clock, viewer=shopper.customer.id
        )
    except GiftcardError as error:
        if error.code is ErrorCode.NOT_FOUND:
            raise GiftcardError(
                ErrorCode.NOT_FOUND,
                "There is no gift with this number in your account. The gifts you sent are "
                "listed on Your Gift Cards.",
            ) from None
        raise
    return store_page(
        request,
        "store_gift_sent.html",
        "gift",
        {"gift": gift, "send_now": gift.deliver_at <= gift.created_at},
    )
