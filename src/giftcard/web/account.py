"""Your Gift Cards: the balance, the redeem form, the history, the refund preference;
and the account settings: changing the email or password."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from giftcard import customers, gifts, history, ids, redemption
from giftcard.customers import CustomerPrincipal, RefundPreference
from giftcard.errors import GiftcardError
from giftcard.http import client_address, services
from giftcard.passwords import PASSWORD_LENGTH_MAX, PASSWORD_LENGTH_MIN
from giftcard.web import security
from giftcard.web.security import ACCOUNT_PAGE, checked_form, require_shopper, text_field
from giftcard.web.templating import error_headers, error_words, money_for, page, redirect

router = APIRouter(include_in_schema=False)

HISTORY_PAGE_SIZE = 10
# The newest gifts shown; /v1/me/gifts pages through all of them.
GIFTS_SHOWN_MAX = 20
# Far longer than any code however it is typed; longer input is cut, then refused.
CODE_INPUT_LENGTH_MAX = 100
# Far longer than any gift's id: what a flash repeats of an address's id is cut to this.
GIFT_ID_LENGTH_MAX = 64

# The id of the confirmation beside the refund preference form.
REFUNDS_SAVED = "refunds-saved"
# A resend's answer sits in the row under its gift, whose id is this prefix and the gift's.
GIFT_NOTICE_PREFIX = "resent-"

PREFERENCE_WORDS = {
    RefundPreference.GIFT_CARD_BALANCE: "your gift card balance",
    RefundPreference.ORIGINAL_PAYMENT_METHOD: "the card you paid with",
}


async def _account_page(
    request: Request,
    shopper: CustomerPrincipal,
    *,
    starting_after: str | None = None,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    svc = services(request)
    cursor = ids.parse_cursor(ids.TRANSACTION, starting_after)
    balance = await redemption.balance(svc.db, shopper.customer)
    found = await history.customer_history(
        svc.db, shopper.customer, limit=HISTORY_PAGE_SIZE, starting_after=cursor
    )
    sent_gifts = await gifts.list_for_purchaser(
        svc.db, shopper.customer.id, clock=svc.clock, limit=GIFTS_SHOWN_MAX
    )
    flash = _placed_beside(security.take_flash(request), sent_gifts.items)
    values = dict(values or {})
    pending = security.pending_code(request)
    if pending is not None and "code" not in values:
        # A redeem link's code, carried through logging in: fill it in once.
        values["code"] = pending
        request.state.clear_pending_code = True
    older = None
    if found.has_more and found.items:
        older = f"{ACCOUNT_PAGE}?starting_after=" + ids.format_id(
            ids.TRANSACTION, found.items[-1].transaction_id
        )
    context: dict[str, Any] = {
        "balance": balance,
        "history": found.items,
        "older_href": older,
        "newest_href": ACCOUNT_PAGE if cursor is not None else None,
        "preference": shopper.customer.refund_preference.value,
        "preferences": [
            (RefundPreference.GIFT_CARD_BALANCE.value, "Gift card balance"),
            (RefundPreference.ORIGINAL_PAYMENT_METHOD.value, "Original payment method"),
        ],
        "values": values,
        "errors": errors or {},
        "code_from_link": pending is not None,
        "sent_gifts": sent_gifts.items,
        "gift_status_words": GIFT_STATUS_WORDS,
        "flash": flash,
        "gift_notice_prefix": GIFT_NOTICE_PREFIX,
    }
    return page(request, "account.html", context, status=status, headers=headers)


def _placed_beside(flash: dict[str, Any] | None, shown: list[gifts.Gift]) -> dict[str, Any] | None:
    """The flash, kept beside the gift it answers when that gift is on the page; otherwise
    (another shopper's gift, or one no longer among the newest) shown at the top, so that
    no answer is lost."""
    if flash is None or flash.get("place") != "gift":
        return flash
    if any(gift.public_id == flash.get("gift") for gift in shown):
        return flash
    return {key: value for key, value in flash.items() if key not in ("place", "gift")}


@router.get(ACCOUNT_PAGE, response_class=HTMLResponse)
async def gift_cards(request: Request, starting_after: str | None = None) -> Response:
    shopper = await require_shopper(request)
    return await _account_page(request, shopper, starting_after=starting_after)


@router.post(ACCOUNT_PAGE + "/redeem", response_class=HTMLResponse)
async def redeem(request: Request) -> Response:
    form = await checked_form(request)
    code = text_field(form, "code", length_max=CODE_INPUT_LENGTH_MAX)
    shopper = await security.current_shopper(request)
    if shopper is None:
        # The session ended while the form was open: keep the code through logging in.
        response = redirect(request, security.login_url(ACCOUNT_PAGE))
        if code.strip():
            security.keep_pending_code(request, response, code.strip())
        return response
    if not code.strip():
        return await _account_page(
            request,
            shopper,
            values={"code": code},
            errors={"code": "Enter the code from your gift card."},
            status=422,
        )
    svc = services(request)
    try:
        redeemed = await redemption.redeem_limited(
            svc.unit_of_work(),
            svc.limits,
            shopper.customer,
            code,
            address=client_address(request),
            secret_key=svc.settings.secret_key,
            actor=shopper.actor,
        )
    except GiftcardError as error:
        return await _account_page(
            request,
            shopper,
            values={"code": code},
            errors={"code": error_words(error)},
            status=error.status,
            headers=error_headers(error),
        )
    locale_money = money_for(shopper)
    return redirect(
        request,
        ACCOUNT_PAGE,
        flash={
            "level": "success",
            "title": f"{locale_money(redeemed.amount, redeemed.currency)} was added to your "
            "balance.",
            "text": "Your gift card balance is now "
            f"{locale_money(redeemed.balance.available, redeemed.currency)}.",
        },
    )


GIFT_STATUS_WORDS = {
    gifts.GiftStatus.SCHEDULED: "Scheduled",
    gifts.GiftStatus.SENT: "Sent",
    gifts.GiftStatus.FAILED: "Not delivered",
    gifts.GiftStatus.REDEEMED: "Redeemed",
}


@router.post("/account/gifts/{gift_id}/resend", response_class=HTMLResponse)
async def resend_gift(request: Request, gift_id: str) -> Response:
    """The buyer sends a gift's email again: same code, new email, now. The answer is
    shown in the row under the gift, and the address takes the browser straight there,
    so a shopper with many gifts keeps their place in the list."""
    await checked_form(request)
    shopper = await require_shopper(request)
    svc = services(request)
    asked_for = gift_id[:GIFT_ID_LENGTH_MAX]
    beside = ACCOUNT_PAGE + "#" + GIFT_NOTICE_PREFIX + quote(asked_for, safe="")
    try:
        gift = await gifts.resend(
            svc.unit_of_work(),
            ids.parse_id(ids.GIFT, gift_id),
            actor=shopper.actor,
            viewer=shopper.customer.id,
        )
    except GiftcardError as error:
        return redirect(
            request,
            beside,
            flash={
                "level": "error",
                "place": "gift",
                "gift": asked_for,
                "title": error_words(error),
                "text": "Nothing was sent.",
            },
        )
    return redirect(
        request,
        ACCOUNT_PAGE + "#" + GIFT_NOTICE_PREFIX + quote(gift.public_id, safe=""),
        flash={
            "level": "success",
            "place": "gift",
            "gift": gift.public_id,
            "title": f"The gift card email to {gift.recipient_email} is on its way again.",
            "text": "It carries the same code as before.",
        },
    )


@router.post("/account/refund-preference", response_class=HTMLResponse)
async def refund_preference(request: Request) -> Response:
    form = await checked_form(request)
    shopper = await require_shopper(request)
    chosen = text_field(form, "refund_preference", length_max=40)
    try:
        preference = RefundPreference(chosen)
    except ValueError:
        return await _account_page(
            request,
            shopper,
            errors={"refund_preference": "Choose where refunds should go."},
            status=422,
        )
    svc = services(request)
    await customers.update_customer(svc.db, shopper.customer.id, refund_preference=preference)
    # The confirmation is shown inside the form's own section, where the shopper is, and
    # the address takes the browser (and the reading position) straight to it.
    return redirect(
        request,
        ACCOUNT_PAGE + "#" + REFUNDS_SAVED,
        flash={
            "level": "success",
            "place": "refunds",
            "title": "Your refund preference is saved.",
            "text": f"Refunds of the card part of a payment now go to "
            f"{PREFERENCE_WORDS[preference]}. What a gift card paid always returns to your "
            "gift card balance.",
        },
    )


# --- account settings: the email and the password -----------------------------------------

SETTINGS_PAGE = "/account/settings"


def _settings_page(
    request: Request,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    return page(
        request,
        "account_settings.html",
        {"password_min": PASSWORD_LENGTH_MIN, "values": values or {}, "errors": errors or {}},
        status=status,
        headers=headers,
    )


@router.get(SETTINGS_PAGE, response_class=HTMLResponse)
async def settings(request: Request) -> Response:
    await require_shopper(request)
    return _settings_page(request)


@router.post("/account/email", response_class=HTMLResponse)
async def change_email(request: Request) -> Response:
    form = await checked_form(request)
    shopper = await require_shopper(request)
    email = text_field(form, "email", length_max=customers.EMAIL_LENGTH_MAX + 50)
    password = text_field(form, "email_password", length_max=PASSWORD_LENGTH_MAX + 1)
    svc = services(request)
    try:
        changed = await customers.change_email(
            svc.unit_of_work(),
            svc.limits,
            shopper,
            new_email=email,
            current_password=password,
            address=client_address(request),
        )
    except GiftcardError as error:
        # The form's own password field answers for the API's `current_password`, and
        # for a lock-out, which is about guessing it.
        field = "email" if error.param == "email" else "email_password"
        return _settings_page(
            request,
            values={"email": email},
            errors={field: error_words(error)},
            status=error.status,
            headers=error_headers(error),
        )
    return redirect(
        request,
        SETTINGS_PAGE,
        flash={
            "level": "success",
            "title": f"Your email is now {changed.email}.",
            "text": "Log in with it from now on. We've told your old address about the change.",
        },
    )


@router.post("/account/password", response_class=HTMLResponse)
async def change_password(request: Request) -> Response:
    form = await checked_form(request)
    shopper = await require_shopper(request)
    current = text_field(form, "current_password", length_max=PASSWORD_LENGTH_MAX + 1)
    new = text_field(form, "new_password", length_max=PASSWORD_LENGTH_MAX + 1)
    if new != text_field(form, "confirm_password", length_max=PASSWORD_LENGTH_MAX + 1):
        return _settings_page(
            request,
            errors={"confirm_password": "The two new passwords differ. Type the same one twice."},
            status=422,
        )
    svc = services(request)
    try:
        await customers.change_password(
            svc.unit_of_work(),
            svc.limits,
            shopper,
            current_password=current,
            new_password=new,
            address=client_address(request),
        )
    except GiftcardError as error:
        return _settings_page(
            request,
            errors={error.param or "current_password": error_words(error)},
            status=error.status,
            headers=error_headers(error),
        )
    return redirect(
        request,
        SETTINGS_PAGE,
        flash={
            "level": "success",
            "title": "Your password is changed.",
            "text": "You are still logged in here; every other device was logged out. We've "
            "told your email address about the change.",
        },
    )
