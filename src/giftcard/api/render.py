"""Domain values to response bodies."""

from __future__ import annotations

from typing import Any

from giftcard import ids
from giftcard.api import schemas
from giftcard.cards import Card, IssuedCard
from giftcard.codes import format_code
from giftcard.customers import Customer, StaffPrincipal
from giftcard.history import HistoryItem
from giftcard.payments import Payment, Refund
from giftcard.redemption import Balance, Redemption


def customer(value: Customer) -> schemas.CustomerOut:
    return schemas.CustomerOut(
        id=ids.format_id(ids.CUSTOMER, value.id),
        email=value.email,
        name=value.name,
        region=value.region,
        currency=value.currency,
        refund_preference=value.refund_preference.value,
    )


def staff(value: StaffPrincipal) -> schemas.StaffOut:
    return schemas.StaffOut(
        id=ids.format_id(ids.STAFF, value.staff_id),
        email=value.email,
        role=value.role.value,
    )


def balance(value: Balance) -> schemas.BalanceOut:
    return schemas.BalanceOut(
        currency=value.currency, available=value.available, held=value.held, total=value.total
    )


def redemption(value: Redemption) -> dict[str, Any]:
    return schemas.RedemptionOut(
        id=ids.format_id(ids.TRANSACTION, value.transaction_id),
        amount=value.amount,
        currency=value.currency,
        balance=balance(value.balance),
        card=schemas.CardRef(serial=value.card_serial, last4=value.card_last4),
        created_at=value.created_at,
    ).model_dump(mode="json")


def history_item(value: HistoryItem) -> schemas.TransactionOut:
    return schemas.TransactionOut(
        id=ids.format_id(ids.TRANSACTION, value.transaction_id),
        type=value.type,
        amount=value.amount,
        currency=value.currency,
        balance_after=value.balance_after,
        description=value.description,
        created_at=value.created_at,
        payment_id=None
        if value.payment_id is None
        else ids.format_id(ids.PAYMENT, value.payment_id),
        card_last4=value.card_last4,
    )


def _card_fields(value: Card) -> dict[str, Any]:
    return {
        "id": ids.format_id(ids.CARD, value.id),
        "serial": value.serial,
        "last4": value.last4,
        "kind": value.kind.value,
        "state": value.state.value,
        "amount": value.amount,
        "currency": value.currency,
        "region": value.region,
        "expires_at": value.expires_at,
        "activated_at": value.activated_at,
        "redeemed_at": value.redeemed_at,
        "created_at": value.created_at,
    }


def card(value: Card) -> schemas.CardOut:
    return schemas.CardOut(**_card_fields(value))


def issued_card(value: IssuedCard, *, with_code: bool = True) -> schemas.IssuedCardOut:
    return schemas.IssuedCardOut(
        **_card_fields(value.card), code=format_code(value.code) if with_code else None
    )


def refund(value: Refund) -> schemas.RefundOut:
    return schemas.RefundOut(
        id=ids.format_id(ids.REFUND, value.id),
        payment_id=ids.format_id(ids.PAYMENT, value.payment_id),
        amount=value.amount,
        currency=value.currency,
        to_gift_card_balance=value.to_gift_card_balance,
        to_original_payment_method=value.to_original_payment_method,
        created_at=value.created_at,
    )


def payment(value: Payment) -> dict[str, Any]:
    return schemas.PaymentOut(
        id=ids.format_id(ids.PAYMENT, value.id),
        status=value.status.value,
        customer_id=ids.format_id(ids.CUSTOMER, value.customer_id),
        order_id=value.order_id,
        amount=value.amount,
        currency=value.currency,
        gift_card_amount=value.gift_card_part,
        other_amount=value.other_part,
        captured_amount=value.captured_amount,
        captured_gift_card_amount=value.captured_gift_card_amount,
        captured_other_amount=value.captured_other_amount,
        refunded_amount=value.refunded_amount,
        refunded_to_gift_card_balance=value.refunded_to_gift_card_balance,
        refunded_to_original_payment_method=value.refunded_to_original_payment_method,
        hold_expires_at=value.hold_expires_at,
        created_at=value.created_at,
        refunds=schemas.RefundList(
            data=[refund(item) for item in value.refunds], has_more=value.refunds_has_more
        ),
    ).model_dump(mode="json")
