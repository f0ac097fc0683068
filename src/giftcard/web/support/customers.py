"""Console pages for customers: search, a customer's balance and history, adjustments
and the approval queue, gifts.

Each page calls one use case of :mod:`giftcard.support` with the staff member as the
audit log names them, and each form ends in a redirect whose flash says what it did, or
in the same page again with the refusal beside its field.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from giftcard import gifts, ids, money
from giftcard.customers import StaffPrincipal
from giftcard.errors import GiftcardError, validation_error
from giftcard.http import services
from giftcard.support import adjustments
from giftcard.support import customers as support
from giftcard.web.account import GIFT_STATUS_WORDS
from giftcard.web.security import checked_form, text_field
from giftcard.web.support.session import HOME, actor, console_page, require_staff
from giftcard.web.templating import error_headers, redirect

router = APIRouter(prefix=HOME, include_in_schema=False)

CUSTOMERS = HOME + "/customers"
APPROVALS = HOME + "/approvals"
HISTORY_PAGE_SIZE = 20
# The id of the answer to a gift form, at the top of the customer page's Gifts section.
GIFT_ANSWER = "gift-answer"
QUEUE_PAGE_SIZE = 50

REASON_CHOICES = [(reason.value, label) for reason, label in adjustments.REASON_LABELS.items()]
STATUS_WORDS = {
    adjustments.Status.APPLIED: "Applied",
    adjustments.Status.PENDING_APPROVAL: "Waiting for approval",
    adjustments.Status.REJECTED: "Rejected",
}


def customer_href(customer_id: int) -> str:
    return f"{CUSTOMERS}/{ids.format_id(ids.CUSTOMER, customer_id)}"


def _error_page(request: Request, error: GiftcardError) -> Response:
    return console_page(
        request,
        "support/error.html",
        "customers",
        {
            "heading": error.code.problem_title,
            "message": error.detail,
            "action_href": CUSTOMERS,
            "action_label": "Find a customer",
        },
        status=error.status,
        headers=error_headers(error),
    )


# --- search -------------------------------------------------------------------------


@router.get("/customers", response_class=HTMLResponse)
async def search(request: Request, email: str | None = None) -> Response:
    staff = await require_staff(request)
    context: dict[str, Any] = {"values": {"email": email or ""}, "errors": {}, "found": None}
    if email is None:
        return console_page(request, "support/customers.html", "customers", context)
    svc = services(request)
    try:
        found = await support.find(
            svc.unit_of_work(), actor(request, staff), email[: support.SEARCH_LENGTH_MAX + 50]
        )
    except GiftcardError as error:
        context["errors"] = {"email": error.detail}
        return console_page(
            request,
            "support/customers.html",
            "customers",
            context,
            status=error.status,
            headers=error_headers(error),
        )
    context["found"] = found
    return console_page(request, "support/customers.html", "customers", context)


# --- one customer -------------------------------------------------------------------


async def _customer_page(
    request: Request,
    staff: StaffPrincipal,
    customer_id: str,
    *,
    starting_after: str | None = None,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    svc = services(request)
    try:
        number = ids.parse_id(ids.CUSTOMER, customer_id)
        cursor = ids.parse_cursor(ids.TRANSACTION, starting_after)
        found = await support.detail(
            svc.unit_of_work(),
            actor(request, staff),
            number,
            history_limit=HISTORY_PAGE_SIZE,
            history_starting_after=cursor,
        )
    except GiftcardError as error:
        return _error_page(request, error)
    here = customer_href(number)
    older = None
    if found.history.has_more and found.history.items:
        older = f"{here}?starting_after=" + ids.format_id(
            ids.TRANSACTION, found.history.items[-1].transaction_id
        )
    context: dict[str, Any] = {
        "found": found,
        "here": here,
        "older_href": older,
        "newest_href": here if cursor is not None else None,
        "reasons": REASON_CHOICES,
        "reason_labels": {
            reason.value: label for reason, label in adjustments.REASON_LABELS.items()
        },
        "status_words": STATUS_WORDS,
        "gift_status_words": GIFT_STATUS_WORDS,
        "approval_minor": svc.settings.adjustment_approval_minor,
        "exponent": money.currency_exponent(found.customer.currency),
        "amount_example": money.example_amount(found.customer.region),
        "values": values or {},
        "errors": errors or {},
    }
    return console_page(
        request, "support/customer.html", "customers", context, status=status, headers=headers
    )


@router.get("/customers/{customer_id}", response_class=HTMLResponse)
async def customer(
    request: Request, customer_id: str, starting_after: str | None = None
) -> Response:
    staff = await require_staff(request)
    return await _customer_page(request, staff, customer_id, starting_after=starting_after)


@router.post("/customers/{customer_id}/adjustments", response_class=HTMLResponse)
async def adjust(request: Request, customer_id: str) -> Response:
    form = await checked_form(request)
    staff = await require_staff(request)
    values = {
        "amount": text_field(form, "amount", length_max=money.AMOUNT_INPUT_LENGTH_MAX + 8),
        "reason": text_field(form, "reason", length_max=40),
        "note": text_field(form, "note", length_max=adjustments.NOTE_LENGTH_MAX + 100),
    }
    svc = services(request)
    try:
        number = ids.parse_id(ids.CUSTOMER, customer_id)
    except GiftcardError as error:
        return _error_page(request, error)
    try:
        made = await adjustments.create(
            svc.unit_of_work(),
            actor(request, staff),
            number,
            amount_major=values["amount"],
            reason=values["reason"],
            note=values["note"],
            approval_minor=svc.settings.adjustment_approval_minor,
        )
    except GiftcardError as error:
        return await _customer_page(
            request,
            staff,
            customer_id,
            values=values,
            errors={error.param or "amount": error.detail},
            status=error.status,
            headers=error_headers(error),
        )
    shown = money.format_minor(abs(made.amount), made.currency)
    if made.status is adjustments.Status.APPLIED:
        verb = "added to" if made.amount > 0 else "deducted from"
        flash = {
            "level": "success",
            "title": f"Applied: {shown} {verb} the customer's balance.",
            "text": f"Adjustment {made.public_id} is in their history and the audit log.",
        }
    else:
        flash = {
            "level": "info",
            "title": "Waiting for a second staff member's approval.",
            "text": f"Adjustment {made.public_id} ({'+' if made.amount > 0 else '-'}{shown}) "
            "moves no money until another staff member approves it under Approvals.",
        }
    return redirect(request, customer_href(number) + "#adjustments", flash=flash)


# --- gifts --------------------------------------------------------------------------


def _back_to(form_value: str) -> str:
    """Where a gift form returns: the answer in the Gifts section of the customer page
    it was sent from, else the search."""
    number = ids.parse_cursor(ids.CUSTOMER, form_value) if form_value else None
    return customer_href(number) + "#" + GIFT_ANSWER if number is not None else CUSTOMERS


def _gift_flash(back: str, **flash: str) -> dict[str, str]:
    """A gift form's answer. On the customer page it is shown in the Gifts section, where
    the agent is (a flash at the top would take the focus, and the agent, up there)."""
    return {**flash, "place": "gifts"} if back != CUSTOMERS else flash


@router.post("/gifts/{gift_id}/resend", response_class=HTMLResponse)
async def resend_gift(request: Request, gift_id: str) -> Response:
    form = await checked_form(request)
    staff = await require_staff(request)
    svc = services(request)
    try:
        back = _back_to(text_field(form, "customer_id", length_max=40))
        gift = await support.resend_gift(
            svc.unit_of_work(), actor(request, staff), ids.parse_id(ids.GIFT, gift_id)
        )
    except GiftcardError as error:
        back = _safe_back(form)
        return redirect(
            request,
            back,
            flash=_gift_flash(back, level="error", title=error.detail, text="Nothing was sent."),
        )
    return redirect(
        request,
        back,
        flash=_gift_flash(
            back,
            level="success",
            title=f"The gift card email to {gift.recipient_email} is on its way again.",
            text=f"Gift {gift.public_id} carries the same code as before.",
        ),
    )


def _safe_back(form: Any) -> str:
    try:
        return _back_to(text_field(form, "customer_id", length_max=40))
    except GiftcardError:
        return CUSTOMERS


@router.post("/gifts/{gift_id}/recipient", response_class=HTMLResponse)
async def correct_recipient(request: Request, gift_id: str) -> Response:
    form = await checked_form(request)
    staff = await require_staff(request)
    svc = services(request)
    email = text_field(form, "recipient_email", length_max=gifts.EMAIL_INPUT_LENGTH_MAX + 50)
    name = text_field(form, "recipient_name", length_max=gifts.NAME_LENGTH_MAX + 50)
    customer_id = text_field(form, "customer_id", length_max=40)
    try:
        corrected = await support.correct_gift_recipient(
            svc.unit_of_work(),
            actor(request, staff),
            ids.parse_id(ids.GIFT, gift_id),
            recipient_email=email,
            recipient_name=name or None,
            secret_key=svc.settings.secret_key,
        )
    except GiftcardError as error:
        if not customer_id:
            return _error_page(request, error)
        field = "recipient_name" if error.param == "recipient_name" else "recipient_email"
        return await _customer_page(
            request,
            staff,
            customer_id,
            values={f"recipient_email-{gift_id}": email, f"recipient_name-{gift_id}": name},
            errors={f"{field}-{gift_id}": error.detail},
            status=error.status,
            headers=error_headers(error),
        )
    gift = corrected.gift
    text = (
        "The old code no longer works; a new one is on its way to the new address."
        if corrected.rekeyed
        else "Its email will go there when it is due; the code is unchanged."
    )
    back = _safe_back(form)
    return redirect(
        request,
        back,
        flash=_gift_flash(
            back,
            level="success",
            title=f"Gift {gift.public_id} now goes to {gift.recipient_email} "
            f"(was {corrected.previous_email}).",
            text=text,
        ),
    )


# --- the approval queue -------------------------------------------------------------


@router.get("/approvals", response_class=HTMLResponse)
async def approvals(request: Request, starting_after: str | None = None) -> Response:
    staff = await require_staff(request)
    svc = services(request)
    try:
        page = await adjustments.pending(
            svc.db,
            limit=QUEUE_PAGE_SIZE,
            starting_after=ids.parse_cursor(ids.ADJUSTMENT, starting_after),
        )
    except GiftcardError as error:
        return _error_page(request, error)
    older = None
    if page.has_more and page.items:
        older = f"{APPROVALS}?starting_after={page.items[-1].public_id}"
    return console_page(
        request,
        "support/approvals.html",
        "approvals",
        {
            "queue": page.items,
            "older_href": older,
            "me": staff.actor,
            "reason_labels": dict(REASON_CHOICES),
            "customer_href": customer_href,
        },
    )


@router.post("/approvals/{adjustment_id}/{decision}", response_class=HTMLResponse)
async def decide(request: Request, adjustment_id: str, decision: str) -> Response:
    form = await checked_form(request)
    staff = await require_staff(request)
    svc = services(request)
    note = text_field(form, "note", length_max=adjustments.NOTE_LENGTH_MAX + 100)
    try:
        number = ids.parse_id(ids.ADJUSTMENT, adjustment_id)
        if decision == "approve":
            decided = await adjustments.approve(
                svc.unit_of_work(), actor(request, staff), number, note=note or None
            )
        elif decision == "reject":
            decided = await adjustments.reject(
                svc.unit_of_work(), actor(request, staff), number, note=note or None
            )
        else:
            raise validation_error("Approve or reject.", "decision")
    except GiftcardError as error:
        done = "approved" if decision == "approve" else "rejected"
        return redirect(
            request,
            APPROVALS,
            flash={
                "level": "error",
                "title": f"{adjustment_id[:40]} was not {done}: {error.detail}",
                "text": "Nothing changed.",
            },
        )
    shown = money.format_minor(decided.amount, decided.currency)
    if decided.status is adjustments.Status.APPLIED:
        flash = {
            "level": "success",
            "title": f"Approved and applied: {decided.public_id}, {shown}.",
            "text": "The customer's balance changed now; it is in their history.",
        }
    else:
        flash = {
            "level": "success",
            "title": f"Rejected: {decided.public_id}, {shown}.",
            "text": "No money moved.",
        }
    return redirect(request, APPROVALS, flash=flash)
