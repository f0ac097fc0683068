"""Request and response bodies. Money is always an integer in minor units beside its
currency; a float is refused, never rounded."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
)

from giftcard.money import AMOUNT_MINOR_MAX

AmountMinor = Annotated[StrictInt, Field(ge=1, le=AMOUNT_MINOR_MAX, description="Minor units")]
Currency = Annotated[StrictStr, Field(min_length=3, max_length=3, examples=["USD"])]
RegionCode = Annotated[StrictStr, Field(min_length=1, max_length=8, examples=["US"])]
Email = Annotated[StrictStr, Field(min_length=3, max_length=254, examples=["ada@example.com"])]
Password = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Name = Annotated[StrictStr, Field(max_length=200)]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomerCreate(Input):
    email: Email
    password: Password
    region: RegionCode
    name: Name | None = None


class CustomerOut(BaseModel):
    id: str = Field(examples=["cus_7qnwnh0ssvgr2"])
    email: str
    name: str | None
    region: str
    currency: str
    refund_preference: Literal["gift_card_balance", "original_payment_method"]


class SessionCreate(Input):
    email: Email
    password: Password


class StaffOut(BaseModel):
    id: str = Field(examples=["stf_e3myp58hq6qa9"])
    email: str
    role: Literal["support", "admin"]


class SessionOut(BaseModel):
    token: str
    expires_at: datetime
    customer: CustomerOut | None = None
    staff: StaffOut | None = None


class MePatch(Input):
    refund_preference: Literal["gift_card_balance", "original_payment_method"] | None = None
    name: Name | None = None


class PasswordChange(Input):
    current_password: Password
    new_password: Password = Field(description="8 to 256 characters")


class EmailChange(Input):
    email: Email = Field(description="The new email; it must belong to nobody else")
    current_password: Password


class PasswordResetCreate(Input):
    email: Email


class PasswordResetAccepted(BaseModel):
    status: Literal["accepted"]
    detail: str


class PasswordResetConfirm(Input):
    token: Annotated[StrictStr, Field(min_length=1, max_length=128)] = Field(
        description="The `token` of the link in the email"
    )
    password: Password = Field(description="The new password: 8 to 256 characters")


class BalanceOut(BaseModel):
    currency: str
    available: int
    held: int
    total: int


class CardRef(BaseModel):
    serial: str
    last4: str


class RedemptionCreate(Input):
    code: Annotated[StrictStr, Field(max_length=256, examples=["7KQ4-M2ZP-X9CD-R3TW"])]


class RedemptionOut(BaseModel):
    id: str = Field(examples=["txn_a959bdz8znmwy"])
    amount: int
    currency: str
    balance: BalanceOut
    card: CardRef
    created_at: datetime


class TransactionOut(BaseModel):
    id: str
    type: Literal["redemption", "payment", "refund", "adjustment", "release"]
    amount: int
    currency: str
    balance_after: int
    description: str
    created_at: datetime
    payment_id: str | None = None
    card_last4: str | None = None


class TransactionList(BaseModel):
    data: list[TransactionOut]
    has_more: bool


class CardCreate(Input):
    amount: AmountMinor
    currency: Currency | None = None
    region: RegionCode
    kind: Literal["digital", "physical"]
    expires_at: AwareDatetime | None = None
    count: Annotated[StrictInt, Field(ge=1, le=1000)] = 1


class CardOut(BaseModel):
    id: str = Field(examples=["card_4cgqp4yq52jvr"])
    serial: str
    last4: str
    kind: Literal["digital", "physical"]
    state: Literal["inactive", "active", "redeemed", "frozen", "cancelled", "expired"]
    amount: int
    currency: str
    region: str
    expires_at: datetime | None
    activated_at: datetime | None
    redeemed_at: datetime | None
    created_at: datetime


class IssuedCardOut(CardOut):
    code: str | None = Field(
        description="The full code, shown in this response only. A response replayed for a "
        "repeated Idempotency-Key has null here: codes are never stored."
    )


class IssuedCardList(BaseModel):
    data: list[IssuedCardOut]


class CardActivate(Input):
    serial: Annotated[StrictStr, Field(min_length=1, max_length=64, examples=["412345678903"])]


class Health(BaseModel):
    status: Literal["ok"]


class ProblemType(BaseModel):
    code: str
    title: str
    status: int
    when: str
    what_to_do: str


class PaymentCreate(Input):
    customer_id: Annotated[StrictStr, Field(max_length=40, examples=["cus_7qnwnh0ssvgr2"])]
    order_id: Annotated[StrictStr, Field(min_length=1, max_length=255, examples=["order-1001"])]
    amount: AmountMinor
    currency: Currency
    use_balance: Literal["max", "none"] | Annotated[StrictInt, Field(ge=0, le=AMOUNT_MINOR_MAX)] = (
        Field(
            default="max",
            description='"max" (all the balance can pay), "none", or at most this many minor units',
        )
    )
    capture: StrictBool = True


class PaymentCapture(Input):
    amount: AmountMinor | None = None


class RefundCreate(Input):
    amount: AmountMinor


class RefundOut(BaseModel):
    id: str = Field(examples=["re_06njz9sxhzkc7"])
    payment_id: str
    amount: int
    currency: str
    to_gift_card_balance: int
    to_original_payment_method: int
    created_at: datetime


class RefundList(BaseModel):
    data: list[RefundOut]
    has_more: bool


class PaymentOut(BaseModel):
    id: str = Field(examples=["pay_3x40av93afn8q"])
    status: Literal["authorized", "captured", "voided", "expired", "refunded"]
    customer_id: str
    order_id: str
    amount: int
    currency: str
    gift_card_amount: int = Field(
        description="What the gift card balance pays: once captured, what was captured "
        "from it; before, what is held for the order."
    )
    other_amount: int = Field(
        description="What the store must charge to another payment method: once "
        "captured, the captured amount less the balance's part; before, the order's "
        "amount less the balance's part."
    )
    captured_amount: int
    captured_gift_card_amount: int
    captured_other_amount: int
    refunded_amount: int
    refunded_to_gift_card_balance: int
    refunded_to_original_payment_method: int
    hold_expires_at: datetime | None
    created_at: datetime
    refunds: RefundList = Field(
        description="The newest refunds, newest first; page through all of them with "
        "GET /v1/payments/{id}/refunds."
    )


class GiftCreate(Input):
    amount: AmountMinor
    currency: Currency | None = None
    region: RegionCode
    recipient_email: Annotated[
        StrictStr, Field(min_length=1, max_length=254, examples=["sam@example.com"])
    ]
    recipient_name: Annotated[StrictStr, Field(max_length=200, examples=["Sam"])] | None = None
    sender_name: Annotated[StrictStr, Field(min_length=1, max_length=200, examples=["Alex"])]
    message: (
        Annotated[
            StrictStr,
            Field(max_length=1000, description="Up to 1,000 characters; line breaks are kept."),
        ]
        | None
    ) = None
    deliver_at: (
        Annotated[
            StrictStr,
            Field(
                max_length=64,
                description="When to send the email: an ISO 8601 timestamp with a time zone, at "
                "most a year ahead. Left out, the email is sent now.",
                examples=["2026-12-24T09:00:00+01:00"],
                json_schema_extra={"format": "date-time"},
            ),
        ]
        | None
    ) = None
    purchaser_customer_id: (
        Annotated[
            StrictStr,
            Field(
                max_length=40,
                description="The customer who bought the gift: they see it in GET /v1/me/gifts "
                "and may resend it.",
                examples=["cus_7qnwnh0ssvgr2"],
            ),
        ]
        | None
    ) = None


class GiftOut(BaseModel):
    id: str = Field(examples=["gift_8ajmcqp12vpdf"])
    card: CardRef
    status: Literal["scheduled", "sent", "failed", "redeemed"]
    amount: int
    currency: str
    region: str
    recipient_email: str
    recipient_name: str | None
    sender_name: str
    message: str | None
    deliver_at: datetime
    sent_at: datetime | None
    attempts: int = Field(description="Delivery attempts of the latest email.")
    last_error: str | None = Field(
        description="Why the latest delivery attempt failed; shown to staff and API keys, "
        "null for the purchasing customer."
    )
    purchaser_customer_id: str | None
    created_at: datetime


class GiftList(BaseModel):
    data: list[GiftOut]
    has_more: bool


# -- Records: the audit log and the liability report ---------------------------------------


class AuditEntryOut(BaseModel):
    id: str = Field(examples=["aud_1"])
    created_at: datetime
    actor: str = Field(examples=["staff:3", "api_key:2"])
    actor_role: str = Field(examples=["support"])
    action: str = Field(examples=["card.freeze"])
    target: str | None = Field(examples=["card_4cgqp4yq52jvr"])
    reason: str | None
    note: str | None
    outcome: str = Field(description="ok, or the error code the action was refused with.")
    detail: dict[str, Any]
    request_id: str | None
    hash: str = Field(description="SHA-256 over the entry's fields and prev_hash.")
    prev_hash: str = Field(description="The hash of the entry before this one.")


class AuditEntryList(BaseModel):
    data: list[AuditEntryOut]
    has_more: bool


class RegionLiabilityOut(BaseModel):
    region: str | None = Field(
        description="null for value given that no customer's region could be found for."
    )
    currency: str
    outstanding: int = Field(description="Active, expired and frozen card values plus balances.")
    active_cards: int
    active_value: int
    expired_cards: int
    expired_value: int = Field(description="Expired cards' value: still on the ledger.")
    frozen_cards: int
    frozen_value: int
    inactive_cards: int = Field(description="Physical cards not sold yet: no value.")
    customers: int
    customers_available: int
    customers_held: int
    store_credit_given: int
    net_adjustments: int


class ReconciliationOut(BaseModel):
    currency: str
    cards_and_customers: int
    ledger_tracked_accounts: int
    ledger_system_accounts: int = Field(description="Minus the sum of system accounts' postings.")
    difference_tracked: int
    difference_system: int
    reconciled: bool


class DayActivityOut(BaseModel):
    date: str = Field(examples=["2026-12-02"])
    issued: int
    redeemed: int
    spent: int
    refunded: int
    adjusted: int


class CurrencyActivityOut(BaseModel):
    currency: str
    days: list[DayActivityOut]


class LiabilityReportOut(BaseModel):
    generated_at: datetime
    first_day: str
    last_day: str
    reconciled: bool
    regions: list[RegionLiabilityOut]
    reconciliation: list[ReconciliationOut]
    activity: list[CurrencyActivityOut]


# --- support: cards ----------------------------------------------------------------


class CardLookupCreate(Input):
    """Exactly one way of asking: `code`, `serial`, or `last4` with `customer_id`."""

    code: Annotated[StrictStr, Field(max_length=256, examples=["7KQ4-M2ZP-X9CD-R3TW"])] | None = (
        Field(default=None, description="The code as the customer reads it (forgiving input)")
    )
    serial: Annotated[StrictStr, Field(max_length=64, examples=["412345678903"])] | None = None
    last4: Annotated[StrictStr, Field(max_length=16, examples=["R3TW"])] | None = Field(
        default=None, description="The code's last four, among the cards `customer_id` redeemed"
    )
    customer_id: (
        Annotated[StrictStr, Field(max_length=40, examples=["cus_7qnwnh0ssvgr2"])] | None
    ) = None


class CardEventOut(BaseModel):
    type: str = Field(
        examples=["redeemed"],
        description="What happened: issued, activated, redeemed, frozen, unfrozen, "
        "cancelled, replaced, or a gift's email events such as gift_queued",
    )
    actor: str = Field(examples=["customer:12"])
    reason: str | None
    created_at: datetime
    transaction_id: str | None = Field(examples=["txn_a959bdz8znmwy"])
    customer_id: str | None
    related_card_id: str | None = Field(
        description="On `replaced`: the new card; on a replacement's `issued`: the card it "
        "replaces."
    )


class RedeemedIntoOut(BaseModel):
    id: str = Field(examples=["cus_7qnwnh0ssvgr2"])
    email: str
    name: str | None
    balance: BalanceOut = Field(description="The customer's balance now")


class CreditOut(BaseModel):
    transaction_id: str = Field(examples=["txn_a959bdz8znmwy"])
    created_at: datetime
    amount: int
    currency: str
    balance_after: int = Field(
        description="The customer's available balance right after this transaction"
    )


class LookupGiftOut(BaseModel):
    id: str = Field(examples=["gift_8ajmcqp12vpdf"])
    recipient_email: str
    recipient_name: str | None
    status: Literal["scheduled", "sent", "failed", "redeemed"]


class CardLookupOut(BaseModel):
    card: CardOut
    events: list[CardEventOut] = Field(description="Every event on the card, oldest first")
    redeemed_into: RedeemedIntoOut | None = Field(
        description="The customer the card was redeemed into, with their balance now"
    )
    credit: CreditOut | None = Field(
        description="The journal transaction that credited the card's value to that customer"
    )
    gift: LookupGiftOut | None = Field(description="The e-gift the card was bought as, if any")
    replaces: str | None = Field(description="The card this one was issued in place of")
    replaced_by: str | None = Field(description="The card issued in place of this one")


class CardLookupList(BaseModel):
    data: list[CardLookupOut]


class CardChange(Input):
    reason: Annotated[StrictStr, Field(min_length=1, max_length=1000)] = Field(
        description="Why, in a few words: 1 to 500 characters once trimmed",
        examples=["Customer reports the card stolen"],
    )
    note: Annotated[StrictStr, Field(max_length=4000)] | None = Field(
        default=None, description="More, for whoever reads the audit log: up to 2,000 characters"
    )


class ReplacementOut(BaseModel):
    replaced: CardOut = Field(description="The old card, now cancelled")
    card: IssuedCardOut = Field(description="The new card, with its code shown this once")


# --- support: customers, adjustments, gifts -----------------------------------------


class SupportCustomerOut(CustomerOut):
    balance: BalanceOut
    created_at: datetime


class SupportCustomerList(BaseModel):
    data: list[SupportCustomerOut]
    has_more: bool


class RedeemedCardOut(BaseModel):
    id: str = Field(examples=["card_4cgqp4yq52jvr"])
    serial: str
    last4: str
    amount: int
    currency: str
    redeemed_at: datetime | None


class PaymentSummaryOut(BaseModel):
    id: str = Field(examples=["pay_3x40av93afn8q"])
    order_id: str
    status: str
    amount: int
    currency: str
    gift_card_amount: int
    captured_amount: int
    refunded_amount: int
    created_at: datetime


AdjustmentReason = Literal[
    "goodwill", "correction", "fraud_reversal", "lost_card_replacement", "other"
]


class AdjustmentCreate(Input):
    amount: Annotated[
        StrictInt,
        Field(
            ge=-AMOUNT_MINOR_MAX,
            le=AMOUNT_MINOR_MAX,
            description="Signed, in minor units: positive credits the customer, negative "
            "deducts. Not zero.",
        ),
    ]
    currency: Currency | None = Field(
        default=None, description="If given, it must be the customer's currency."
    )
    reason: AdjustmentReason
    note: Annotated[
        StrictStr,
        Field(
            min_length=1,
            max_length=2000,
            description="Why, for the audit log and the approver; never shown to the customer.",
        ),
    ]


class AdjustmentDecision(Input):
    note: Annotated[StrictStr, Field(max_length=2000)] | None = None


class AdjustmentOut(BaseModel):
    id: str = Field(examples=["adj_32ek9njs3nvnz"])
    status: Literal["applied", "pending_approval", "rejected"]
    amount: int
    currency: str
    reason: AdjustmentReason
    note: str
    created_by: str = Field(examples=["staff:3"])
    customer_id: str
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    transaction_id: str | None = Field(
        description="The journal transaction that applied it; null until applied."
    )
    created_at: datetime


class AdjustmentList(BaseModel):
    data: list[AdjustmentOut]
    has_more: bool


class SupportCustomerDetail(SupportCustomerOut):
    transactions: TransactionList = Field(description="The latest history items.")
    cards_redeemed: list[RedeemedCardOut]
    gifts: list[GiftOut] = Field(description="E-gift cards this customer bought, newest first.")
    payments: list[PaymentSummaryOut]
    adjustments: list[AdjustmentOut]


class RecipientCorrection(Input):
    recipient_email: Annotated[
        StrictStr, Field(min_length=1, max_length=254, examples=["sam@example.com"])
    ]
    recipient_name: Annotated[StrictStr, Field(max_length=200, examples=["Sam"])] | None = None
