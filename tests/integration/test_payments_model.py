"""Long random sequences of redemptions and payments against a plain model (SPEC §6
Payments, §9).

Hypothesis drives a state machine whose rules are what shoppers and the store do:
redeem a card, pay for an order (all of the balance, none, or a part; captured at once or
held), capture (in full or in part), void, refund (in part or in full, to wherever the
customer prefers), change the refund preference, and let time pass with or without the
hold sweeper running. Beside the service runs a model in a few lines of Python: each
customer's available and held balances and each payment's state. After every step the
service must agree with the model, an operation the model calls invalid must be refused
with the problem code the model names (and change nothing), and at the end of each
sequence `giftcard verify` must find the ledger whole.

The service is the real app over httpx, on SQLite and on PostgreSQL. Hypothesis is
synchronous, the app is not: the app lives on an event loop in a thread of its own, and
each step hands its coroutine to that loop and waits for the answer. One database serves
the whole test (creating one per example would dominate the run time); each example signs
up fresh customers, so examples never see each other's balances. The clock is a
FrozenClock shared by all examples and only ever moves forward.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from giftcard import ids
from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.config import Settings
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import Shopper, api_key, assert_problem, issue, sign_up

pytestmark = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)

T = TypeVar("T")

HOLD_TTL_S = 7 * 86400
# Seconds one step may wait for the app; generous for a slow CI machine.
STEP_TIMEOUT_S = 60
CUSTOMERS_PER_EXAMPLE_MAX = 4
CARD_AMOUNT_MAX = 20_000
ORDER_AMOUNT_MAX = 15_000
# Durations that put a hold just before, exactly at, and just after its expiry, plus
# some that leave it alone.
TIME_STEPS_S = [0, 1, 3600, HOLD_TTL_S - 1, HOLD_TTL_S, HOLD_TTL_S + 1, 2 * HOLD_TTL_S]

# How much to capture or refund; the valid choices come up more often than the invalid.
CAPTURE_HOW = st.sampled_from(["full", "partial", "partial", "too_much"])
REFUND_HOW = st.sampled_from(["rest", "partial", "partial", "too_much"])
USE_BALANCE = st.sampled_from(["max", "none", "part", "all", "too_much"])
UNKNOWN_PAYMENT = "/v1/payments/pay_999999999"


def use_balance(use: str, amount: int, percent: int) -> str | int:
    """The use_balance sent: "max", "none", or a number (part of the order, all of it,
    or one more than the order, which is refused)."""
    if use in ("max", "none"):
        return use
    return {"part": amount * percent // 100, "all": amount, "too_much": amount + 1}[use]


def _order(**changes: Any) -> dict[str, Any]:
    # customer_id "" stands for the example's customer.
    return {
        "customer_id": "",
        "order_id": "order-wrong",
        "amount": 1000,
        "currency": "USD",
        "use_balance": "max",
        **changes,
    }


# What a wrong request is answered with: (path, body, (status, problem code)).
MISTAKES: dict[str, tuple[str, dict[str, Any] | None, tuple[int, str]]] = {
    "currency": ("/v1/payments", _order(currency="EUR"), (409, "currency_mismatch")),
    "zero amount": ("/v1/payments", _order(amount=0), (422, "validation_error")),
    "negative use": ("/v1/payments", _order(use_balance=-1), (422, "validation_error")),
    "unknown customer": (
        "/v1/payments",
        _order(customer_id=ids.format_id(ids.CUSTOMER, 999999999)),
        (404, "not_found"),
    ),
    "capture unknown": (f"{UNKNOWN_PAYMENT}/capture", None, (404, "not_found")),
    "void unknown": (f"{UNKNOWN_PAYMENT}/void", None, (404, "not_found")),
    "refund unknown": (f"{UNKNOWN_PAYMENT}/refunds", {"amount": 100}, (404, "not_found")),
}

# Outcomes every run must reach at least once (the random steps usually reach each of
# them many times, and every sequence's teardown reaches the refusals once more, so the
# run never depends on the draw); the rarer ones are counted, and shown if this fails.
REQUIRED_OUTCOMES = {
    "paid",
    "held",
    "captured",
    "voided",
    "hold expired",
    "refunded",
    "payment refused: order has a live payment",
    "capture refused: not authorized",
    "void refused: not authorized",
}

MODEL_SETTINGS = hypothesis_settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture
def settings_for_model(settings: Settings) -> Settings:
    """Abuse limits out of the way (every example signs up new customers from one
    address), and sessions that outlive all the time the examples let pass."""
    return replace(
        settings,
        hold_ttl_s=HOLD_TTL_S,
        session_ttl_s=100 * 365 * 86400,
        limit_redeem_failures_account="100000/15minutes",
        limit_redeem_failures_address="100000/15minutes",
        limit_redeem_misses_service="100000/15minutes",
        limit_signups_address="100000/hour",
    )


class World:
    """The app under test on an event loop in a thread of its own, called from
    synchronous code: each call hands a coroutine to the loop and waits for its result."""

    def __init__(self, settings: Settings, clock: FrozenClock) -> None:
        self.clock = clock
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.services, self.client, self.admin = self.call(self._start(settings))

    async def _start(
        self, settings: Settings
    ) -> tuple[Services, httpx.AsyncClient, dict[str, str]]:
        services = Services.build(settings, clock=self.clock)
        transport = httpx.ASGITransport(
            app=create_app(services=services), client=("203.0.113.9", 4711)
        )
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        return services, client, await api_key(services, "merchant")

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(STEP_TIMEOUT_S)

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        return self.call(self.client.request(method, url, **options))

    def close(self) -> None:
        try:
            self.call(self.client.aclose())
            self.call(self.services.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(STEP_TIMEOUT_S)
            self.loop.close()


@pytest.fixture
def world(settings_for_model: Settings, clock: FrozenClock) -> Iterator[World]:
    running = World(settings_for_model, clock)
    yield running
    running.close()


@dataclass
class CustomerModel:
    shopper: Shopper
    available: int = 0
    held: int = 0
    refund_to_balance: bool = False

    def balance(self) -> dict[str, Any]:
        return {
            "currency": "USD",
            "available": self.available,
            "held": self.held,
            "total": self.available + self.held,
        }


@dataclass
class PaymentModel:
    id: str
    customer_id: str
    order_id: str
    amount: int
    gift: int
    status: str
    expires_at: datetime | None
    captured: int = 0
    captured_gift: int = 0
    refunded: int = 0
    refunded_gift: int = 0
    refunds: list[int] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.status in ("authorized", "captured")

    def expected(self) -> dict[str, Any]:
        """The fields of GET /v1/payments/{id} that the model predicts: once captured,
        the split is what was captured (what the balance paid, what the store charges
        elsewhere); before, the planned one."""
        captured = self.status in ("captured", "refunded")
        gift = self.captured_gift if captured else self.gift
        total = self.captured if captured else self.amount
        return {
            "id": self.id,
            "status": self.status,
            "customer_id": self.customer_id,
            "order_id": self.order_id,
            "amount": self.amount,
            "currency": "USD",
            "gift_card_amount": gift,
            "other_amount": total - gift,
            "captured_amount": self.captured,
            "refunded_amount": self.refunded,
            "refunds": self.refunds,
        }


OBSERVED_FIELDS = (
    "id",
    "status",
    "customer_id",
    "order_id",
    "amount",
    "currency",
    "gift_card_amount",
    "other_amount",
    "captured_amount",
    "refunded_amount",
)


def observed(body: dict[str, Any]) -> dict[str, Any]:
    """The fields of a payment the model predicts, refunds by their amounts."""
    seen = {key: body[key] for key in OBSERVED_FIELDS}
    # The payment shows its newest refunds first; the model keeps them in order made.
    assert body["refunds"]["has_more"] is False, "the model makes fewer refunds than shown"
    seen["refunds"] = [item["amount"] for item in reversed(body["refunds"]["data"])]
    return seen


class PaymentsMachine(RuleBasedStateMachine):
    """Shoppers and a store against the service, checked against a model of balances."""

    world: ClassVar[World]
    # What the steps did, over all examples: the test checks that the sequences really
    # reached every kind of outcome, so that a pass means something.
    outcomes: ClassVar[Counter[str]]
    customers = Bundle("customers")
    payments = Bundle("payments")
    _orders = itertools.count(1)

    def __init__(self) -> None:
        super().__init__()
        self.customer_models: dict[str, CustomerModel] = {}
        self.payment_models: dict[str, PaymentModel] = {}
        self.now = self.world.clock.now()

    # -- helpers ----------------------------------------------------------------------

    def _in_status(self, status: str) -> list[str]:
        """This example's payments in `status`, for the rules that act on those."""
        return [p.id for p in self.payment_models.values() if p.status == status]

    def _new_order(self) -> str:
        return f"order-{next(self._orders)}"

    def _sign_up(self) -> str:
        shopper = self.world.call(sign_up(self.world.client))
        self.customer_models[shopper.id] = CustomerModel(shopper)
        return shopper.id

    def _check_payment(self, payment_id: str) -> None:
        response = self.world.request("GET", f"/v1/payments/{payment_id}", headers=self.world.admin)
        assert response.status_code == 200, response.text
        assert observed(response.json()) == self.payment_models[payment_id].expected()

    def _payment_request(
        self, customer_id: str, order_id: str, amount: int, use: str | int, capture: bool
    ) -> httpx.Response:
        return self.world.request(
            "POST",
            "/v1/payments",
            json={
                "customer_id": customer_id,
                "order_id": order_id,
                "amount": amount,
                "currency": "USD",
                "use_balance": use,
                "capture": capture,
            },
            headers=self.world.admin,
        )

    def _pay(
        self, customer_id: str, order_id: str, amount: int, use: str | int, capture: bool
    ) -> Any:
        customer = self.customer_models[customer_id]
        response = self._payment_request(customer_id, order_id, amount, use, capture)
        if isinstance(use, int) and use > amount:
            assert_problem(response, 422, "validation_error", param="use_balance")
            self.outcomes["payment refused: use_balance above the order"] += 1
            return multiple()
        earlier = [
            p
            for p in self.payment_models.values()
            if p.customer_id == customer_id and p.order_id == order_id
        ]
        if any(p.live for p in earlier):
            assert_problem(response, 409, "invalid_state", param="order_id")
            self.outcomes["payment refused: order has a live payment"] += 1
            return multiple()
        assert response.status_code == 201, response.text
        requested = {"max": amount, "none": 0}.get(use, use) if isinstance(use, str) else use
        gift = min(int(requested), customer.available, amount)
        payment = PaymentModel(
            id=response.json()["id"],
            customer_id=customer_id,
            order_id=order_id,
            amount=amount,
            gift=gift,
            status="captured" if capture else "authorized",
            expires_at=None if capture else self.now + timedelta(seconds=HOLD_TTL_S),
        )
        customer.available -= gift
        if capture:
            payment.captured, payment.captured_gift = amount, gift
        else:
            customer.held += gift
        self.payment_models[payment.id] = payment
        assert observed(response.json()) == payment.expected()
        self.outcomes["paid" if capture else "held"] += 1
        if earlier:
            self.outcomes["paid again for an order no longer live"] += 1
        if 0 < gift < amount:
            self.outcomes["split between balance and another method"] += 1
        return payment.id

    def _release(self, payment: PaymentModel, status: str) -> None:
        customer = self.customer_models[payment.customer_id]
        payment.status = status
        customer.held -= payment.gift
        customer.available += payment.gift

    # -- customers and their balances -------------------------------------------------

    @initialize(target=customers)
    def two_customers(self) -> Any:
        return multiple(self._sign_up(), self._sign_up())

    @precondition(lambda self: len(self.customer_models) < CUSTOMERS_PER_EXAMPLE_MAX)
    @rule(target=customers)
    def another_customer(self) -> str:
        return self._sign_up()

    @rule(customer_id=customers, amount=st.integers(1, CARD_AMOUNT_MAX))
    def redeem(self, customer_id: str, amount: int) -> None:
        """A card of any amount is issued and redeemed: available rises by its value."""
        customer = self.customer_models[customer_id]
        [card] = self.world.call(issue(self.world.client, self.world.admin, amount=amount))
        response = self.world.request(
            "POST",
            "/v1/me/redemptions",
            json={"code": card["code"]},
            headers=customer.shopper.auth,
        )
        assert response.status_code == 201, response.text
        customer.available += amount
        assert response.json()["balance"] == customer.balance()

    @rule(customer_id=customers, to_balance=st.booleans())
    def set_refund_preference(self, customer_id: str, to_balance: bool) -> None:
        customer = self.customer_models[customer_id]
        preference = "gift_card_balance" if to_balance else "original_payment_method"
        response = self.world.request(
            "PATCH", "/v1/me", json={"refund_preference": preference}, headers=customer.shopper.auth
        )
        assert response.status_code == 200, response.text
        assert response.json()["refund_preference"] == preference
        customer.refund_to_balance = to_balance

    # -- paying ----------------------------------------------------------------------

    @rule(
        target=payments,
        customer_id=customers,
        amount=st.integers(1, ORDER_AMOUNT_MAX),
        use=USE_BALANCE,
        percent=st.integers(0, 100),
    )
    def pay(self, customer_id: str, amount: int, use: str, percent: int) -> Any:
        """A new order, captured at once: the balance pays min(requested, available,
        total) and the store charges the rest elsewhere."""
        return self._pay(
            customer_id, self._new_order(), amount, use_balance(use, amount, percent), True
        )

    @rule(
        target=payments,
        customer_id=customers,
        amount=st.integers(1, ORDER_AMOUNT_MAX),
        use=USE_BALANCE,
        percent=st.integers(0, 100),
    )
    def hold(self, customer_id: str, amount: int, use: str, percent: int) -> Any:
        """A new order, authorized only: the balance's part moves from available to held."""
        return self._pay(
            customer_id, self._new_order(), amount, use_balance(use, amount, percent), False
        )

    @rule(
        target=payments,
        payment_id=payments,
        amount=st.integers(1, ORDER_AMOUNT_MAX),
        capture=st.booleans(),
    )
    def pay_again_for_the_same_order(self, payment_id: str, amount: int, capture: bool) -> Any:
        """A second payment for an order is refused while the first is live (authorized or
        captured) and accepted once it is voided, expired or fully refunded."""
        first = self.payment_models[payment_id]
        return self._pay(first.customer_id, first.order_id, amount, "max", capture)

    @rule(customer_id=customers, mistake=st.sampled_from(sorted(MISTAKES)))
    def wrong_input(self, customer_id: str, mistake: str) -> None:
        """Wrong input is refused with its problem code and moves nothing (the balances
        are compared after every step)."""
        self.outcomes[f"refused {mistake}"] += 1
        method_path, body, (status, code) = MISTAKES[mistake]
        if body and body.get("customer_id") == "":
            body = {**body, "customer_id": customer_id}
        response = self.world.request(
            "POST", method_path, json=body or None, headers=self.world.admin
        )
        assert_problem(response, status, code)

    @rule(payment_id=payments, how=CAPTURE_HOW, percent=st.integers(1, 100))
    def capture(self, payment_id: str, how: str, percent: int) -> None:
        """Any payment, in any state, is captured: only an authorization not yet due
        can be."""
        self._capture(payment_id, how, percent)

    @precondition(lambda self: self._in_status("authorized"))
    @rule(data=st.data(), how=CAPTURE_HOW, percent=st.integers(1, 100))
    def capture_a_hold(self, data: st.DataObject, how: str, percent: int) -> None:
        self._capture(data.draw(st.sampled_from(self._in_status("authorized"))), how, percent)

    def _capture(self, payment_id: str, how: str, percent: int) -> None:
        """An authorization not yet due is captured in full or in part; the balance's
        part is captured first and the rest of the hold goes back to available."""
        payment = self.payment_models[payment_id]
        amount = {
            "full": None,
            "partial": max(1, payment.amount * percent // 100),
            "too_much": payment.amount + 1,
        }[how]
        response = self.world.request(
            "POST",
            f"/v1/payments/{payment_id}/capture",
            json=None if amount is None else {"amount": amount},
            headers=self.world.admin,
        )
        if amount is not None and amount > payment.amount:
            assert_problem(response, 422, "validation_error", param="amount")
            self.outcomes["capture refused: above the authorized amount"] += 1
        elif payment.status != "authorized":
            assert_problem(response, 409, "invalid_state")
            self.outcomes["capture refused: not authorized"] += 1
        elif payment.expires_at is None or payment.expires_at <= self.now:
            assert_problem(response, 409, "invalid_state")
            self.outcomes["capture refused: expired, not yet swept"] += 1
        else:
            assert response.status_code == 200, response.text
            wanted = payment.amount if amount is None else amount
            customer = self.customer_models[payment.customer_id]
            payment.status = "captured"
            payment.captured = wanted
            payment.captured_gift = min(wanted, payment.gift)
            customer.held -= payment.gift
            customer.available += payment.gift - payment.captured_gift
            assert observed(response.json()) == payment.expected()
            self.outcomes["captured"] += 1
            if wanted < payment.amount:
                self.outcomes["captured in part"] += 1
        self._check_payment(payment_id)

    @rule(payment_id=payments)
    def void(self, payment_id: str) -> None:
        self._void(payment_id)

    @precondition(lambda self: self._in_status("authorized"))
    @rule(data=st.data())
    def void_a_hold(self, data: st.DataObject) -> None:
        self._void(data.draw(st.sampled_from(self._in_status("authorized"))))

    def _void(self, payment_id: str) -> None:
        """An authorization not yet due is voided, its whole hold returns to available;
        any other payment cannot be voided, nor can a hold past its expiry that the
        sweeper has not reached yet (releasing it is the sweeper's job)."""
        payment = self.payment_models[payment_id]
        response = self.world.request(
            "POST", f"/v1/payments/{payment_id}/void", headers=self.world.admin
        )
        if payment.status != "authorized":
            assert_problem(response, 409, "invalid_state")
            self.outcomes["void refused: not authorized"] += 1
        elif payment.expires_at is None or payment.expires_at <= self.now:
            assert_problem(response, 409, "invalid_state")
            self.outcomes["void refused: expired, not yet swept"] += 1
        else:
            assert response.status_code == 200, response.text
            self._release(payment, "voided")
            assert observed(response.json()) == payment.expected()
            self.outcomes["voided"] += 1
        self._check_payment(payment_id)

    @rule(payment_id=payments, how=REFUND_HOW, percent=st.integers(1, 100))
    def refund(self, payment_id: str, how: str, percent: int) -> None:
        self._refund(payment_id, how, percent)

    @precondition(lambda self: self._in_status("captured"))
    @rule(data=st.data(), how=REFUND_HOW, percent=st.integers(1, 100))
    def refund_a_payment(self, data: st.DataObject, how: str, percent: int) -> None:
        self._refund(data.draw(st.sampled_from(self._in_status("captured"))), how, percent)

    def _refund(self, payment_id: str, how: str, percent: int) -> None:
        """A captured payment is refunded, never beyond what it captured: the balance's
        part first and always to the balance, the rest where the customer prefers."""
        payment = self.payment_models[payment_id]
        customer = self.customer_models[payment.customer_id]
        refundable = payment.captured - payment.refunded
        base = refundable if refundable > 0 else payment.amount
        amount = {
            "rest": base,
            "partial": max(1, base * percent // 100),
            "too_much": refundable + 1,
        }[how]
        response = self.world.request(
            "POST",
            f"/v1/payments/{payment_id}/refunds",
            json={"amount": amount},
            headers=self.world.admin,
        )
        if payment.status != "captured":
            assert_problem(response, 409, "invalid_state")
            self.outcomes["refund refused: not captured"] += 1
        elif amount > refundable:
            assert_problem(response, 409, "invalid_state", param="amount")
            self.outcomes["refund refused: above what is left"] += 1
        else:
            assert response.status_code == 201, response.text
            gift_part = min(amount, payment.captured_gift - payment.refunded_gift)
            other_part = amount - gift_part
            to_balance = gift_part + (other_part if customer.refund_to_balance else 0)
            made = response.json()
            assert (made["amount"], made["to_gift_card_balance"]) == (amount, to_balance)
            assert made["to_original_payment_method"] == amount - to_balance
            payment.refunded += amount
            payment.refunded_gift += gift_part
            payment.refunds.append(amount)
            if payment.refunded == payment.captured:
                payment.status = "refunded"
            customer.available += to_balance
            self.outcomes["refunded"] += 1
            if payment.status == "refunded":
                self.outcomes["refunded in full"] += 1
            if amount - to_balance:
                self.outcomes["refunded to the original payment method"] += 1
        self._check_payment(payment_id)

    # -- time ------------------------------------------------------------------------

    @rule(
        seconds=st.one_of(st.sampled_from(TIME_STEPS_S), st.integers(0, 2 * HOLD_TTL_S)),
        sweep=st.sampled_from([True, True, False]),
    )
    def time_passes(self, seconds: int, sweep: bool) -> None:
        """The clock moves on; when the sweeper runs, every authorization at or past its
        expiry is released. Until it runs, such a hold can no longer be captured or
        voided (see `capture` and `void`)."""
        self._advance(seconds, sweep)

    @precondition(lambda self: self._in_status("authorized"))
    @rule(
        data=st.data(),
        offset_s=st.sampled_from([-1, 0, 0, 1, 3600]),
        sweep=st.sampled_from([True, True, False]),
    )
    def a_hold_reaches_its_expiry(self, data: st.DataObject, offset_s: int, sweep: bool) -> None:
        """The clock moves to a second before, exactly at, or after one hold's expiry
        (never backwards), and the sweeper may run: the edge where a hold stops being
        capturable and becomes the sweeper's."""
        payment = self.payment_models[data.draw(st.sampled_from(self._in_status("authorized")))]
        assert payment.expires_at is not None
        target = payment.expires_at + timedelta(seconds=offset_s)
        self._advance(max(0, int((target - self.now).total_seconds())), sweep)

    def _advance(self, seconds: int, sweep: bool) -> None:
        self.world.clock.advance(timedelta(seconds=seconds))
        self.now += timedelta(seconds=seconds)
        assert self.world.clock.now() == self.now
        self.outcomes["time passed"] += 1
        if not sweep:
            return
        self.outcomes["swept"] += 1
        self.world.call(self.world.services.maintain_once())
        for payment in self.payment_models.values():
            due = payment.expires_at is not None and payment.expires_at <= self.now
            if payment.status == "authorized" and due:
                self._release(payment, "expired")
                self.outcomes["hold expired"] += 1

    # -- checks ----------------------------------------------------------------------

    @invariant()
    def balances_match_the_model(self) -> None:
        for customer in self.customer_models.values():
            response = self.world.request("GET", "/v1/me/balance", headers=customer.shopper.auth)
            assert response.status_code == 200, response.text
            assert response.json() == customer.balance()
            assert customer.available >= 0
            assert customer.held == sum(
                p.gift
                for p in self.payment_models.values()
                if p.customer_id == customer.shopper.id and p.status == "authorized"
            )

    def teardown(self) -> None:
        """Every sequence ends alike, so that each one reaches every outcome a run must
        show, on top of whatever state the random steps left: three new holds for the
        first customer, a second payment for a held order (refused), one hold captured
        in part and one voided, each then voided or captured again (refused), a payment
        captured at once and refunded, and the clock moved past every hold's expiry for
        the sweeper; then every balance and payment must match the model, and `giftcard
        verify` must find the ledger whole."""
        if not self.customer_models:
            return
        customer_id = next(iter(self.customer_models))
        captured, voided, _ = (
            self._pay(customer_id, self._new_order(), 1000, "max", capture=False) for _ in range(3)
        )
        self._pay(customer_id, self.payment_models[captured].order_id, 500, "max", capture=True)
        self._capture(captured, "partial", 50)
        self._void(voided)
        self._void(captured)
        self._capture(voided, "full", 100)
        paid = self._pay(customer_id, self._new_order(), 1000, "max", capture=True)
        self._refund(paid, "rest", 100)
        self._advance(HOLD_TTL_S + 1, sweep=True)
        self.balances_match_the_model()
        assert not self._in_status("authorized")
        for payment_id in self.payment_models:
            self._check_payment(payment_id)
        report = self.world.call(verify(self.world.services.db))
        assert report.problems == []


def test_payments_agree_with_a_plain_model(world: World) -> None:
    """Given fresh customers per example, long random sequences of redeem, pay, capture,
    void, refund, preference changes and passing time leave every balance and payment
    where the model says, refuse exactly the operations the model calls invalid, and
    leave a ledger that `giftcard verify` finds whole."""
    outcomes: Counter[str] = Counter()
    machine = type(
        "BoundPaymentsMachine", (PaymentsMachine,), {"world": world, "outcomes": outcomes}
    )
    run_state_machine_as_test(machine, settings=MODEL_SETTINGS)
    missing = REQUIRED_OUTCOMES - set(outcomes)
    assert not missing, (missing, sorted(outcomes.items()))
