"""Abuse limits (SPEC §8): refused redemptions per account and per address, sign-ups per
address, failed log-ins per email from one address and per address, password reset
links asked for per address and per email; and, for the whole service, the codes tried
that match no card.

The per-requester limits bound a guesser by its addresses; one with thousands of them
would still check thousands of times as many codes. The service-wide limit bounds every
guesser together: it counts only what could have found a card, a code that passes its
check symbol and is looked up in vain, so shoppers' typos (which the check symbol
catches) never spend it. When it is full, redemptions are paused for everyone until the
window frees a unit: a guesser with many addresses can pause them, never find a code.

Count first, give back on success. Every attempt reserves one unit on each of its rules
before it runs, in one atomic step that every worker and server sees; when any rule is
full the attempt is refused with `too_many_attempts` and reserves nothing. An attempt that
succeeds gives its units back (a redemption, when the units live in its own database,
in its own transaction: they are given back if and only if it commits); a refused one
keeps them, so they count as its failure.
On SQLite, which lets one writer at a time in, a redemption of a code counts in its own
write transaction instead: what it counted there stays true until it commits, so it
checks the limits before the code is looked at, adds its units only if it is refused,
and commits them with the refusal. One transaction, and one commit to disk, instead of
a reservation and a give-back around the redemption's.
Because the reservation comes first, attempts sent all at once cannot all pass a check
before any of them counts: of a burst of guesses from one account, exactly as many run
as the limit allows, however many processes answer them.

The units live in Redis when GIFTCARD_REDIS_URL is set (one Lua script per reservation:
a sorted set per rule and identity, its members unique reservation ids scored by time),
and in the database otherwise (the `limit_reservations` table, changed under a lock per
key). On PostgreSQL the attempts of one process that come while a reservation call runs
go together in the next call, each judged as if it had come alone (group commit: one
round trip, one commit and one turn on a busy key's lock for all of them). Time comes
from the service's clock, so that tests can move it. No lock is held while waiting for
anything but the store itself.

While a requester is locked, every attempt is refused before its code or password is
looked at, so the lock tells a guesser nothing. Refusals caused by the lock itself do
not count again: the lock ends when the window has moved past the failures that set it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import redis.asyncio as redis
from limits import parse
from redis.exceptions import RedisError
from sqlalchemy import Row, bindparam, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.clock import Clock
from giftcard.config import Settings
from giftcard.db import batches, direct, riders
from giftcard.db.engine import Database
from giftcard.db.tables import limit_reservations
from giftcard.errors import ErrorCode, GiftcardError, RedemptionError, TooManyAttempts

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 2.0
# Expired reservations removed by one maintenance pass: in batches, so that no delete
# holds the table for long, and a bounded number of them; the next pass takes the rest.
PURGE_BATCH_MAX = 5000
PURGE_BATCHES_MAX = 20


@dataclass(frozen=True)
class Rule:
    """At most `attempts_max` kept reservations per identity in any `window_s` seconds."""

    name: str
    attempts_max: int
    window_s: int

    @classmethod
    def parse(cls, name: str, notation: str) -> Rule:
        item = parse(notation)
        return cls(name, item.amount, item.get_expiry())

    def full_with(self, units: int) -> bool:
        """Whether an identity holding `units` in its window may take no more."""
        return units >= self.attempts_max


@dataclass(frozen=True)
class Slot:
    """One rule applied to one identity (an account, an address, an email at an address)."""

    rule: Rule
    identity: str


@dataclass(frozen=True)
class Reservation:
    """The units one attempt holds: a handle for giving them back. `row_ids`, when the
    store has them, are in the order of `keys`."""

    keys: tuple[str, ...]
    token: str
    row_ids: tuple[int, ...] = ()

    def only(self, keys: Sequence[str]) -> Reservation:
        """The part of this reservation on `keys`, to give back without the rest."""
        kept = [i for i, key in enumerate(self.keys) if key in keys]
        return Reservation(
            tuple(self.keys[i] for i in kept),
            self.token,
            tuple(self.row_ids[i] for i in kept) if self.row_ids else (),
        )


class Refused(Exception):
    """Rules are full (those of `full_keys`): the attempt may be tried again in
    `retry_after_s` seconds."""

    def __init__(self, retry_after_s: int, full_keys: frozenset[str] = frozenset()) -> None:
        super().__init__(retry_after_s)
        self.retry_after_s = retry_after_s
        self.full_keys = full_keys


class Store(Protocol):
    def key(self, key: str) -> str:
        """The name `key` has in this store, as :class:`Reservation` and
        :class:`Refused` give it."""

    async def reserve(
        self, slots: Sequence[tuple[str, Rule]], *, token: str, now: datetime
    ) -> Reservation:
        """One unit on every slot, or none at all and :class:`Refused`."""

    async def give_back(self, reservation: Reservation) -> None: ...

    async def give_back_in(self, connection: AsyncConnection, reservation: Reservation) -> bool:
        """Give `reservation` back in the transaction of `connection`, so that it is given
        back when, and only when, that transaction commits; False when this store does not
        live in that database, and the units are to be given back after the commit."""

    @property
    def counts_in_transaction(self) -> bool:
        """Whether this store lives in the service's database and what a write transaction
        of it counts stays true until that transaction commits (one writer at a time, or
        locks on the keys held to the commit): then a redemption checks and keeps its
        units in its own transaction, with :meth:`check_in` and :meth:`keep_in`, and
        redemptions settled together in one transaction look first with
        :meth:`held_in`."""

    async def check_in(
        self, connection: AsyncConnection, slots: Sequence[tuple[str, Rule]], *, now: datetime
    ) -> None:
        """Raise :class:`Refused` when a slot is full, reserving nothing."""

    async def keep_in(
        self, connection: AsyncConnection, slots: Sequence[tuple[str, Rule]], *, now: datetime
    ) -> None:
        """One unit on every slot, in the transaction of `connection`, whether full or not:
        the attempt has happened, and counts."""

    async def held_in(
        self, connection: AsyncConnection, keys: Sequence[str], *, now: datetime
    ) -> dict[str, int]:
        """The units each of `keys` (as :meth:`key` names them) holds in its window, as
        committed when read, without waiting for the keys' locks; keys holding none are
        left out."""

    async def check_ready(self) -> None:
        """Raise :class:`GiftcardError` (service_unavailable) when the store is down."""

    async def purge(self, *, now: datetime) -> int: ...

    async def tidy(self) -> None:
        """Reclaim what reservations given back leave behind, where the store needs it."""

    async def close(self) -> None: ...


class RedeemAttempt:
    """A redemption under way inside :meth:`AbuseLimits.redeem_attempt`. Its transaction
    calls :meth:`began_in` first, before the code is looked at, then
    :meth:`succeeded_in` or :meth:`refused_in` last. A transaction that is retried calls
    them again, so what counts is what the run that committed did."""

    def __init__(
        self,
        limits: AbuseLimits,
        slots: Sequence[tuple[str, Rule]],
        reservation: Reservation | None,
        *,
        now: datetime,
    ) -> None:
        self._limits = limits
        self._slots = slots
        # None: the units are counted in the redemption's transaction, not reserved before.
        self._reservation = reservation
        self._now = now
        # Whether the transaction dealt with the units, given back or kept.
        self.settled = False

    async def began_in(self, connection: AsyncConnection) -> None:
        """Where the store counts in the transaction, check the limits: refused with
        :class:`TooManyAttempts` (or :class:`RedemptionsPaused`) while one is full."""
        self.settled = False
        if self._reservation is None:
            try:
                await self._limits.store.check_in(connection, self._slots, now=self._now)
            except Refused as refused:
                raise self._limits.redeem_refusal(refused) from None

    async def succeeded_in(self, connection: AsyncConnection) -> None:
        """The last step of a redemption's transaction that succeeded: where the store
        allows, its units are given back in that transaction, one commit instead of two,
        and never given back for a redemption that did not commit. Units counted in the
        transaction were never added."""
        if self._reservation is None:
            self.settled = True
        else:
            self.settled = await self._limits.store.give_back_in(connection, self._reservation)

    @property
    def reserved(self) -> bool:
        """Whether its units were reserved before its transaction (else that transaction
        counts them: see :meth:`began_in`)."""
        return self._reservation is not None

    @staticmethod
    async def full_among(
        connection: AsyncConnection, attempts: Sequence[RedeemAttempt]
    ) -> list[bool]:
        """For each of `attempts` that its transaction counts (not :attr:`reserved`), of
        many redemptions that go in one transaction: whether one of its keys is full now,
        as committed, read without the keys' locks; False for a reserved one. An attempt
        found full goes on by itself, where :meth:`began_in` refuses it under the locks.
        One found not full may succeed beside it: a success keeps no unit, so whatever
        refusal a concurrent transaction keeps on the key meanwhile comes after it."""
        counted = [a for a in attempts if not a.reserved]
        if not counted:
            return [False for _ in attempts]
        limits = counted[0]._limits
        if any(a._limits is not limits for a in counted):
            raise ValueError("attempts of one store")
        keyed = {a: [(limits.store.key(key), rule) for key, rule in a._slots] for a in counted}
        now = max(a._now for a in counted)
        held = await limits.store.held_in(
            connection, [key for slots in keyed.values() for key, _ in slots], now=now
        )
        return [
            not attempt.reserved
            and any(rule.full_with(held.get(key, 0)) for key, rule in keyed[attempt])
            for attempt in attempts
        ]

    @staticmethod
    async def all_succeeded_in(
        connection: AsyncConnection, attempts: Sequence[RedeemAttempt]
    ) -> None:
        """:meth:`succeeded_in` for the attempts of many redemptions that succeed in one
        transaction, the units of the reserved ones given back by one statement."""
        for attempt in attempts:
            if not attempt.reserved:
                attempt.settled = True
        attempts = [a for a in attempts if a.reserved]
        if not attempts:
            return
        limits = attempts[0]._limits
        reservations = [a._reservation for a in attempts if a._reservation is not None]
        if any(a._limits is not limits for a in attempts):
            raise ValueError("attempts of one store")
        given_back = await limits.store.give_back_in(
            connection,
            Reservation(
                tuple(key for r in reservations for key in r.keys),
                "",
                tuple(row_id for r in reservations for row_id in r.row_ids),
            ),
        )
        for attempt in attempts:
            attempt.settled = given_back

    async def refused_in(self, connection: AsyncConnection, error: RedemptionError) -> None:
        """The last step of a redemption's transaction that commits its refusal `error`:
        where the store counts in the transaction, its units are added there, all of them
        for a code that matched no card, and all but the service-wide one otherwise."""
        if self._reservation is None:
            kept = self._limits.kept_after(self._slots, error)
            await self._limits.store.keep_in(connection, kept, now=self._now)
            self.settled = True


class AbuseLimits:
    """The abuse limits of SPEC §8, counted in `store`."""

    def __init__(self, settings: Settings, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.redeem_account = Rule.parse("redeem-account", settings.limit_redeem_failures_account)
        self.redeem_address = Rule.parse("redeem-address", settings.limit_redeem_failures_address)
        self.redeem_service = Rule.parse("redeem-service", settings.limit_redeem_misses_service)
        self.signup_address = Rule.parse("signup-address", settings.limit_signups_address)
        self.login_account = Rule.parse("login-account", settings.limit_login_failures_account)
        self.login_address = Rule.parse("login-address", settings.limit_login_failures_address)
        self.reset_address = Rule.parse(
            "password-reset-address", settings.limit_password_resets_address
        )
        self.reset_email = Rule.parse("password-reset-email", settings.limit_password_resets_email)
        self._paused_warning = _PausedWarning()
        # The service-wide limit's key, as the store names it in a Refused.
        self._service_key = store.key(_key(Slot(self.redeem_service, "service")))

    @classmethod
    def build(cls, settings: Settings, db: Database, clock: Clock) -> AbuseLimits:
        """In Redis when GIFTCARD_REDIS_URL is set, else in the database."""
        prefix = settings.limit_key_prefix
        store: Store = (
            RedisStore(settings.redis_url, key_prefix=prefix)
            if settings.redis_url
            else DatabaseStore(db, key_prefix=prefix)
        )
        return cls(settings, store, clock)

    @asynccontextmanager
    async def redeem_attempt(
        self, customer_id: int, address: str, *, looks_up_a_code: bool
    ) -> AsyncIterator[RedeemAttempt]:
        """Run one redemption inside this block: refused at once while the account or
        the address is locked; their units are given back unless it ends in a
        :class:`RedemptionError`, whatever that error is (by the redemption's own
        transaction when it calls :meth:`RedeemAttempt.succeeded_in`). An attempt that
        `looks_up_a_code` (its code passes the check symbol) also takes a unit of the
        service-wide limit, in the same atomic step, refused with
        :class:`RedemptionsPaused` while that is full (and the requester is not locked),
        and kept only when the code matched no card. Where the store counts in the
        transaction, the redemption's transaction does all of this itself (see
        :class:`RedeemAttempt`) and nothing is reserved before it."""
        slots = [
            Slot(self.redeem_account, f"customer:{customer_id}"),
            Slot(self.redeem_address, address),
        ]
        if looks_up_a_code:
            slots.append(Slot(self.redeem_service, "service"))
        keyed = [(_key(slot), slot.rule) for slot in slots]
        now = self.clock.now()
        if looks_up_a_code and self.store.counts_in_transaction:
            attempt = RedeemAttempt(self, keyed, None, now=now)
            try:
                yield attempt
            except RedemptionError as error:
                if not attempt.settled:
                    # Refused without its transaction counting it: counted now, so that
                    # no refusal goes uncounted.
                    await self._keep(keyed, error)
                raise
            return
        try:
            reservation = await self.store.reserve(keyed, token=uuid.uuid4().hex, now=now)
        except Refused as refused:
            raise self.redeem_refusal(refused) from None
        attempt = RedeemAttempt(self, keyed, reservation, now=now)
        try:
            yield attempt
        except BaseException as error:
            # Whatever a failed transaction gave back was rolled back with it.
            if not isinstance(error, RedemptionError):
                await self._give_back(reservation)
            elif looks_up_a_code and not _matched_no_card(error):
                await self._give_back(reservation.only([self._service_key]))
            raise
        if not attempt.settled:
            await self._give_back(reservation)

    def redeem_refusal(self, refused: Refused) -> TooManyAttempts:
        """What a redemption refused by the limits is told: redemptions are paused when
        only the service-wide limit is full, else the requester is locked."""
        if refused.full_keys == {self._service_key}:
            self._paused_warning.emit(self.redeem_service)
            return RedemptionsPaused(_REDEEM_PAUSED_DETAIL, retry_after_s=refused.retry_after_s)
        return TooManyAttempts(_REDEEM_LOCKED_DETAIL, retry_after_s=refused.retry_after_s)

    def login_attempt(self, email: str, address: str) -> AbstractAsyncContextManager[None]:
        """Run one log-in inside this block: refused at once while this email is locked at
        this address, or the address is; only wrong credentials keep their units. The
        email counts per address so that a stranger elsewhere cannot lock its owner out."""
        slots = (
            Slot(self.login_account, f"{address} {email}"),
            Slot(self.login_address, address),
        )
        return self._attempt(slots, detail=_LOGIN_LOCKED_DETAIL, counts=_is_invalid_credentials)

    async def signup_attempt(self, address: str) -> None:
        """Count a sign-up from `address`, refusing it if the address is over its limit.
        Every sign-up counts, so nothing is given back."""
        await self._reserve((Slot(self.signup_address, address),), detail=_SIGNUP_LOCKED_DETAIL)

    async def password_reset_attempt(self, email: str, address: str) -> None:
        """Count a request for a password reset link, refusing it when `address` asked
        for too many, or too many were asked for `email` (whoever asked: a stranger
        cannot fill its owner's mailbox). Every request counts, for an email with an
        account or without one alike, so the refusal tells nothing about the account."""
        await self._reserve(
            (Slot(self.reset_address, address), Slot(self.reset_email, email)),
            detail=_RESET_LINKS_LOCKED_DETAIL,
        )

    async def check_ready(self) -> None:
        await self.store.check_ready()

    async def purge(self) -> int:
        return await self.store.purge(now=self.clock.now())

    async def tidy(self) -> None:
        await self.store.tidy()

    async def close(self) -> None:
        await self.store.close()

    @asynccontextmanager
    async def _attempt(
        self, slots: Sequence[Slot], *, detail: str, counts: Callable[[BaseException], bool]
    ) -> AsyncIterator[None]:
        reservation = await self._reserve(slots, detail=detail)
        try:
            yield
        except BaseException as error:
            if not counts(error):
                await self._give_back(reservation)
            raise
        await self._give_back(reservation)

    async def _reserve(self, slots: Sequence[Slot], *, detail: str) -> Reservation:
        keyed = [(_key(slot), slot.rule) for slot in slots]
        try:
            return await self.store.reserve(keyed, token=uuid.uuid4().hex, now=self.clock.now())
        except Refused as refused:
            raise TooManyAttempts(detail, retry_after_s=refused.retry_after_s) from None

    async def _keep(self, slots: Sequence[tuple[str, Rule]], error: RedemptionError) -> None:
        """Count a refusal `error` after the fact, on `slots` (the service-wide one only
        for a code that matched no card); one that finds a slot full adds nothing there,
        where the requester is locked already."""
        with contextlib.suppress(Refused):
            await self.store.reserve(
                self.kept_after(slots, error), token=uuid.uuid4().hex, now=self.clock.now()
            )

    def kept_after(
        self, slots: Sequence[tuple[str, Rule]], error: RedemptionError
    ) -> list[tuple[str, Rule]]:
        """The slots a redemption refused with `error` keeps its units on: all of them
        for a code that matched no card, all but the service-wide one otherwise."""
        return [
            (key, rule)
            for key, rule in slots
            if _matched_no_card(error) or rule is not self.redeem_service
        ]

    async def _give_back(self, reservation: Reservation) -> None:
        """The attempt has already happened; a store that fails now costs the requester
        one unit until the window moves past it, which is better than failing a request
        whose effect is done."""
        try:
            await self.store.give_back(reservation)
        except Exception:
            log.warning(
                "could not give back an abuse-limit reservation; it will expire", exc_info=True
            )


class RedemptionsPaused(TooManyAttempts):
    """The service-wide limit on codes that match no card is full: redemptions wait for
    everyone, not only for this requester."""


class _PausedWarning:
    """One log line a minute, per process, while redemptions are paused: enough for an
    operator to see it, too few for a guesser to flood the log with."""

    INTERVAL_S = 60.0

    def __init__(self) -> None:
        self._last = -math.inf

    def emit(self, rule: Rule) -> None:
        now = time.monotonic()
        if now - self._last < self.INTERVAL_S:
            return
        self._last = now
        log.warning(
            "redemptions are paused: %d codes that match no card were tried within %d "
            "seconds (GIFTCARD_LIMIT_REDEEM_MISSES_SERVICE); every redemption is refused "
            "until the oldest leaves that window",
            rule.attempts_max,
            rule.window_s,
        )


def _matched_no_card(error: BaseException) -> bool:
    return isinstance(error, RedemptionError) and error.code is ErrorCode.CODE_NOT_FOUND


def _is_invalid_credentials(error: BaseException) -> bool:
    return isinstance(error, GiftcardError) and error.code is ErrorCode.INVALID_CREDENTIALS


def _key(slot: Slot) -> str:
    """The rule's name and a hash of the identity: emails and addresses are not kept in
    the store in the clear, and every key has one bounded length."""
    digest = hashlib.sha256(slot.identity.encode()).hexdigest()
    return f"{slot.rule.name}:{digest}"


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


_REDEEM_LOCKED_DETAIL = (
    "Too many unsuccessful attempts to redeem a code. Please wait before trying again."
)
_REDEEM_PAUSED_DETAIL = (
    "Redemptions are paused for a while because many codes that do not exist were tried; "
    "your code has not been checked. Please try later."
)
_LOGIN_LOCKED_DETAIL = "Too many failed log-ins for this account. Please wait before trying again."
_SIGNUP_LOCKED_DETAIL = "Too many accounts were created from this address. Please try later."
_RESET_LINKS_LOCKED_DETAIL = (
    "Too many password reset links were asked for from here or for this email. Please "
    "wait before asking again, and look for the links already sent."
)
_REDIS_DOWN_DETAIL = (
    "The store that counts attempts (Redis) does not answer, so this cannot be checked "
    "now; nothing was done. Please retry shortly."
)


# The statements of every attempt, built once (see giftcard.ledger).
_LOCK_AND_COUNT = text(
    "SELECT out_key, units, first_expiry FROM giftcard_lock_and_count_limits("
    "CAST(:lock_ids AS bigint[]), CAST(:keys AS text[]), CAST(:at AS timestamptz))"
)
_HELD = (
    select(
        limit_reservations.c.limit_key,
        func.count(),
        func.min(limit_reservations.c.expires_at),
    )
    .where(
        limit_reservations.c.limit_key.in_(bindparam("b_keys", expanding=True)),
        limit_reservations.c.expires_at > bindparam("b_now"),
    )
    .group_by(limit_reservations.c.limit_key)
)
# The same count for any number of keys as one statement (PostgreSQL).
_HELD_ANY = text(
    "SELECT limit_key, count(*) FROM limit_reservations "
    "WHERE limit_key = ANY(CAST(:b_keys AS text[])) AND expires_at > :b_now "
    "GROUP BY limit_key"
).bindparams(bindparam("b_now", type_=limit_reservations.c.expires_at.type))
_RESERVE = insert(limit_reservations).returning(
    limit_reservations.c.id, sort_by_parameter_order=True
)
_KEEP = insert(limit_reservations)
_RESERVE_MANY = text(
    "SELECT out_attempt, out_key, reserved_id, first_expiry FROM giftcard_reserve_limits_many("
    "CAST(:lock_ids AS bigint[]), CAST(:attempts AS integer[]), CAST(:keys AS text[]), "
    "CAST(:maxima AS integer[]), CAST(:expiries AS timestamptz[]), CAST(:at AS timestamptz))"
)
_VACUUM = "VACUUM (SKIP_LOCKED) limit_reservations"
# Sent by itself or as a rider (see giftcard.db.riders): its parameter is named its own way.
_GIVE_BACK = delete(limit_reservations).where(
    limit_reservations.c.id.in_(bindparam("b_given_back_ids", expanding=True))
)


@dataclass(frozen=True)
class _Waiting:
    """An attempt's reservation waiting to be sent with others (see
    :class:`DatabaseStore`)."""

    rules: dict[str, Rule]
    now: datetime


async def _reserve_many(
    batch: Sequence[_Waiting], connection: AsyncConnection
) -> list[list[Row[Any]]]:
    """Each attempt's rows: its units, or its full keys. The units' window is counted at
    the latest moment of the batch's attempts (they are milliseconds apart)."""
    lines = [
        (number, key, rule, waiting.now)
        for number, waiting in enumerate(batch)
        for key, rule in waiting.rules.items()
    ]
    parameters = {
        "lock_ids": _lock_ids(key for _, key, _, _ in lines),
        "attempts": [number for number, _, _, _ in lines],
        "keys": [key for _, key, _, _ in lines],
        "maxima": [rule.attempts_max for _, _, rule, _ in lines],
        "expiries": [_expiry(rule, now) for _, _, rule, now in lines],
        "at": max(waiting.now for waiting in batch),
    }
    rows: list[list[Row[Any]]] = [[] for _ in batch]
    for row in await direct.execute(connection, _RESERVE_MANY, parameters):
        rows[row.out_attempt].append(row)
    return rows


class DatabaseStore:
    """Reservations as rows of `limit_reservations`, one per unit, each with the moment
    it leaves its window. A reservation runs in one write transaction that holds a lock
    per key: PostgreSQL's transaction-scoped advisory locks, taken in key order so that
    two attempts sharing keys never deadlock; SQLite's BEGIN IMMEDIATE already lets one
    writer at a time in. Counting and adding happen under that lock, in as few
    statements as possible, since every attempt on a hot key (one busy address) waits
    for it. Rows past their window are ignored by the count and purged by the sweeper.

    A redemption counts in its own transaction instead (see
    :attr:`counts_in_transaction`): under the same locks on PostgreSQL, taken with the
    count in one call (migration 0014) and held to its commit."""

    def __init__(self, db: Database, *, key_prefix: str) -> None:
        self.db = db
        self.key_prefix = key_prefix
        # PostgreSQL: the attempts that come while a reservation call runs go together in
        # the next one (giftcard_reserve_limits_many, migration 0011), each judged as if
        # it had come alone, after those before it.
        self._batches: batches.Batches[_Waiting, list[Row[Any]]] = batches.Batches(
            lambda attempts: self.db.run_alone(functools.partial(_reserve_many, attempts))
        )
        # Whether this process deleted units (given back or purged) since its last tidying:
        # an idle process has nothing of its own to vacuum.
        self._deleted_since_tidy = False

    def key(self, key: str) -> str:
        return f"{self.key_prefix}:{key}"

    async def reserve(
        self, slots: Sequence[tuple[str, Rule]], *, token: str, now: datetime
    ) -> Reservation:
        rules = {self.key(key): rule for key, rule in slots}
        if self.db.reads_committed:
            return await self._reserve_in_one_call(rules, token=token, now=now)

        async def work(connection: AsyncConnection) -> Reservation:
            await self._lock_and_check(connection, rules, now)
            row_ids = (await connection.execute(_RESERVE, _units(rules, now))).scalars()
            return Reservation(tuple(rules), token, tuple(row_ids))

        return await self.db.run(work)

    @property
    def counts_in_transaction(self) -> bool:
        # SQLite's write transactions begin with BEGIN IMMEDIATE, one at a time; at READ
        # COMMITTED, PostgreSQL's advisory locks on the keys, held to the commit, let one
        # transaction at a time count and keep units on a key, each seeing the last's.
        return self.db.is_sqlite or self.db.reads_committed

    async def check_in(
        self, connection: AsyncConnection, slots: Sequence[tuple[str, Rule]], *, now: datetime
    ) -> None:
        if not self.counts_in_transaction:
            raise TypeError("this store cannot count in a transaction it shares")
        await self._lock_and_check(connection, {self.key(key): rule for key, rule in slots}, now)

    async def keep_in(
        self, connection: AsyncConnection, slots: Sequence[tuple[str, Rule]], *, now: datetime
    ) -> None:
        if not self.counts_in_transaction:
            raise TypeError("this store cannot count in a transaction it shares")
        if slots:
            rules = {self.key(key): rule for key, rule in slots}
            await direct.execute(connection, _KEEP, _units(rules, now))

    async def held_in(
        self, connection: AsyncConnection, keys: Sequence[str], *, now: datetime
    ) -> dict[str, int]:
        counting = {"b_keys": list(dict.fromkeys(keys)), "b_now": now}
        rows = await direct.execute(connection, _HELD_ANY, counting)
        return {key: int(units) for key, units in rows.all()}

    async def _lock_and_check(
        self, connection: AsyncConnection, rules: dict[str, Rule], now: datetime
    ) -> None:
        """Take the keys' locks for this transaction, then raise :class:`Refused` when any
        of `rules` is full."""
        if not self.db.is_sqlite:
            # The lock serialises the attempts on a key; under it, each statement must
            # see what the attempt before committed, which SERIALIZABLE's snapshot
            # (taken before the lock was granted) would not.
            if not self.db.reads_committed:
                await connection.execute(text("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"))
            # Every lock, taken in key order, then the count, in one call (migration 0014).
            locking = {"lock_ids": _lock_ids(rules), "keys": list(rules), "at": now}
            held = (await direct.execute(connection, _LOCK_AND_COUNT, locking)).all()
        else:
            counting = {"b_keys": list(rules), "b_now": now}
            held = (await direct.execute(connection, _HELD, counting)).all()
        full: dict[str, datetime | None] = {
            key: first_expiry for key, count, first_expiry in held if rules[key].full_with(count)
        }
        full |= {key: None for key, rule in rules.items() if rule.full_with(0)}
        _refuse_if_full(rules, full, now)

    async def _reserve_in_one_call(
        self, rules: dict[str, Rule], *, token: str, now: datetime
    ) -> Reservation:
        """PostgreSQL: the same steps done by the database's own function, committed by
        itself, with the attempts of this process that wait with this one."""
        rows = await self._batches.submit(_Waiting(rules, now))
        _refuse_if_full(
            rules, {row.out_key: row.first_expiry for row in rows if row.reserved_id is None}, now
        )
        reserved = {row.out_key: int(row.reserved_id) for row in rows}
        return Reservation(tuple(rules), token, tuple(reserved[key] for key in rules))

    async def give_back(self, reservation: Reservation) -> None:
        async def work(connection: AsyncConnection) -> None:
            await connection.execute(_GIVE_BACK, {"b_given_back_ids": list(reservation.row_ids)})

        # One DELETE, complete by itself: no transaction around it is needed.
        await self.db.run_alone(work)
        self._deleted_since_tidy = True

    async def give_back_in(self, connection: AsyncConnection, reservation: Reservation) -> bool:
        # Nothing else in the redemption's transaction touches these rows: the DELETE
        # rides with its next statement (see giftcard.db.riders).
        riders.write_later(connection, _GIVE_BACK, {"b_given_back_ids": list(reservation.row_ids)})
        self._deleted_since_tidy = True
        return True

    async def check_ready(self) -> None:
        """The database is the store; /readyz checks it already."""

    async def purge(self, *, now: datetime) -> int:
        """Remove reservations that have left their window, in bounded batches."""

        async def one_batch(connection: AsyncConnection) -> int:
            expired = (
                select(limit_reservations.c.id)
                .where(limit_reservations.c.expires_at <= now)
                .limit(PURGE_BATCH_MAX)
                .scalar_subquery()
            )
            result = await connection.execute(
                delete(limit_reservations).where(limit_reservations.c.id.in_(expired))
            )
            return int(result.rowcount)

        purged = 0
        for _ in range(PURGE_BATCHES_MAX):
            removed = await self.db.run(one_batch)
            purged += removed
            if removed < PURGE_BATCH_MAX:
                break
        self._deleted_since_tidy = self._deleted_since_tidy or purged > 0
        return purged

    async def tidy(self) -> None:
        """PostgreSQL: vacuum `limit_reservations`. Every attempt inserts a unit per key
        and every success deletes them: on a busy key (one address, the service-wide
        key) that is thousands of dead rows a second, and autovacuum comes once a
        minute. Until it does, the heap and the key's index grow, and each reservation
        call and each DELETE giving units back walks further, under the keys' locks
        (measured: the reservation call at 0.6 ms after 5 s of redemptions, 10 ms
        after 30 s). Vacuumed every few seconds, the table stays a few pages; a vacuum
        another process is running is not waited for. A process vacuums only after it
        deleted units itself since its last turn (each process answers for the rows it
        left), so an idle server does not. SQLite frees a deleted row's space at once."""
        if self.db.is_sqlite or not self._deleted_since_tidy:
            return
        self._deleted_since_tidy = False

        async def work(connection: AsyncConnection) -> None:
            await connection.exec_driver_sql(_VACUUM)

        try:
            await self.db.run_alone(work)
        except BaseException:
            self._deleted_since_tidy = True
            raise

    async def close(self) -> None:
        """The database belongs to the services; they close it."""


def _lock_ids(keys: Iterable[str]) -> list[int]:
    """The advisory lock of each key, in key order: two attempts sharing keys take their
    locks in the same order and never deadlock."""
    return [_lock_id(key) for key in sorted(set(keys))]


def _units(rules: dict[str, Rule], now: datetime) -> list[dict[str, Any]]:
    """The rows of one unit on each of `rules`, reserved `now`."""
    return [{"limit_key": key, "expires_at": _expiry(rule, now)} for key, rule in rules.items()]


def _expiry(rule: Rule, now: datetime) -> datetime:
    """When a unit reserved `now` under `rule` leaves its window."""
    return now + timedelta(seconds=rule.window_s)


def _refuse_if_full(
    rules: dict[str, Rule], full: dict[str, datetime | None], now: datetime
) -> None:
    """Raise :class:`Refused` when any rule is `full`: given each full key's oldest unit
    still in its window (None when it holds none, a rule that allows no attempt), wait
    until that unit leaves it, or a whole window for a rule that allows none. Never more
    than the window: a unit another worker reserved at a moment later than `now` (its
    clock read after this attempt's) leaves its window at most a window from now."""
    waits = {
        key: (
            rules[key].window_s
            if first_expiry is None or rules[key].full_with(0)
            else min(rules[key].window_s, _seconds_until(first_expiry, now))
        )
        for key, first_expiry in full.items()
    }
    if waits:
        raise Refused(max(waits.values()), frozenset(waits))


def _lock_id(key: str) -> int:
    """A signed 64-bit number for `key`, as pg_advisory_xact_lock takes. Two keys that
    share one only wait for each other, which is harmless."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


# The reservations of many attempts, judged in turn, each as if it had come alone after
# those before it. KEYS: one sorted set per rule and identity, each once. ARGV: the
# moment the batch is counted at (seconds, the latest of its attempts'), then for each
# attempt its member id, its own moment and its number of keys, then for each of its
# keys the key's position in KEYS, its limit and its window (seconds). Each set is
# trimmed to its window once; an attempt's member is added to every set of its keys only
# if none of them is full. Answers one reply per attempt: empty when it reserved, else
# how many seconds until the fullest of its sets has room (never more than its window,
# though another process's member may carry a later moment), then the (1-based)
# positions, among the attempt's own keys, of the full ones.
_RESERVE_MANY_SCRIPT = """
local now = tonumber(ARGV[1])
local trimmed = {}
local answers = {}
local at = 2
while at <= #ARGV do
    local member = ARGV[at]
    local added_at = tonumber(ARGV[at + 1])
    local count = tonumber(ARGV[at + 2])
    at = at + 3
    local keys = {}
    local windows = {}
    local wait = 0
    local full = {}
    for i = 1, count do
        local key = KEYS[tonumber(ARGV[at])]
        local attempts_max = tonumber(ARGV[at + 1])
        local window = tonumber(ARGV[at + 2])
        at = at + 3
        keys[i] = key
        windows[i] = window
        if not trimmed[key] then
            redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
            trimmed[key] = true
        end
        if redis.call('ZCARD', key) >= attempts_max then
            local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
            local until_s = window
            if oldest[2] then
                until_s = math.min(window, tonumber(oldest[2]) + window - now)
            end
            if until_s > wait then
                wait = until_s
            end
            full[#full + 1] = i
        end
    end
    if #full > 0 then
        table.insert(full, 1, tostring(wait))
        answers[#answers + 1] = full
    else
        for i = 1, count do
            redis.call('ZADD', keys[i], added_at, member)
            redis.call('EXPIRE', keys[i], windows[i])
        end
        answers[#answers + 1] = {}
    end
end
return answers
"""


@dataclass(frozen=True)
class _RedisAttempt:
    """An attempt's reservation waiting to be sent with others (see :class:`RedisStore`)."""

    keys: tuple[str, ...]
    rules: tuple[Rule, ...]
    token: str
    now: datetime


class RedisStore:
    """Reservations in Redis: one script call to reserve, one pipeline to give back. The
    attempts of a process that come while a call runs go together in the next one, as
    the database store's do (:mod:`giftcard.db.batches`): the script judges them in
    turn, each as if it had come alone, and Redis runs a script whole, so what it
    decides is exact across processes and servers. The keys share one hash tag, so that
    a script touching several of them also runs on a Redis Cluster. Every call is
    bounded by a socket timeout; a Redis that does not answer refuses the attempts it
    carried with service_unavailable rather than letting them through uncounted."""

    def __init__(self, url: str, *, key_prefix: str) -> None:
        self.key_prefix = key_prefix
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            retry_on_timeout=False,
        )
        self._reserve_script = self.client.register_script(_RESERVE_MANY_SCRIPT)
        self._reservations: batches.Batches[_RedisAttempt, None] = batches.Batches(
            self._reserve_many
        )
        self._give_backs: batches.Batches[Reservation, None] = batches.Batches(self._give_back_many)

    def key(self, key: str) -> str:
        return f"{{{self.key_prefix}}}:{key}"

    async def reserve(
        self, slots: Sequence[tuple[str, Rule]], *, token: str, now: datetime
    ) -> Reservation:
        keys = tuple(self.key(key) for key, _ in slots)
        await self._reservations.submit(
            _RedisAttempt(keys, tuple(rule for _, rule in slots), token, now)
        )
        return Reservation(keys, token)

    async def _reserve_many(self, attempts: Sequence[_RedisAttempt]) -> list[batches.Failed | None]:
        """One script call for `attempts`: None for each that reserved, a failed
        :class:`Refused` for each refused."""
        keys = list(dict.fromkeys(key for attempt in attempts for key in attempt.keys))
        position = {key: number for number, key in enumerate(keys, start=1)}
        arguments: list[Any] = [repr(max(attempt.now for attempt in attempts).timestamp())]
        for attempt in attempts:
            arguments += [attempt.token, repr(attempt.now.timestamp()), len(attempt.keys)]
            for key, rule in zip(attempt.keys, attempt.rules, strict=True):
                arguments += [position[key], rule.attempts_max, rule.window_s]
        try:
            answers = await self._reserve_script(keys=keys, args=arguments)
        except (RedisError, OSError) as error:
            raise _redis_down() from error
        results: list[batches.Failed | None] = []
        for attempt, refused in zip(attempts, answers, strict=True):
            if not refused:
                results.append(None)
                continue
            wait, *positions = refused
            full = frozenset(attempt.keys[int(number) - 1] for number in positions)
            results.append(batches.Failed(Refused(max(1, math.ceil(float(wait))), full)))
        return results

    async def give_back(self, reservation: Reservation) -> None:
        await self._give_backs.submit(reservation)

    async def _give_back_many(self, reservations: Sequence[Reservation]) -> list[None]:
        """Remove the members of `reservations` from their sets, one command a set."""
        members: dict[str, list[str]] = {}
        for reservation in reservations:
            for key in reservation.keys:
                members.setdefault(key, []).append(reservation.token)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, tokens in members.items():
                    pipe.zrem(key, *tokens)
                await pipe.execute()
        except (RedisError, OSError) as error:
            raise _redis_down() from error
        return [None for _ in reservations]

    async def give_back_in(self, connection: AsyncConnection, reservation: Reservation) -> bool:
        return False

    @property
    def counts_in_transaction(self) -> bool:
        return False

    async def check_in(
        self, connection: AsyncConnection, slots: Sequence[tuple[str, Rule]], *, now: datetime
    ) -> None:
        raise TypeError("Redis counts outside the database's transactions")

    async def keep_in(
        self, connection: AsyncConnection, slots: Sequence[tuple[str, Rule]], *, now: datetime
    ) -> None:
        raise TypeError("Redis counts outside the database's transactions")

    async def held_in(
        self, connection: AsyncConnection, keys: Sequence[str], *, now: datetime
    ) -> dict[str, int]:
        raise TypeError("Redis counts outside the database's transactions")

    async def check_ready(self) -> None:
        try:
            await self.client.ping()
        except (RedisError, OSError) as error:
            raise _redis_down() from error

    async def purge(self, *, now: datetime) -> int:
        """Redis expires idle keys itself, and every reservation trims its own."""
        return 0

    async def tidy(self) -> None:
        """A member removed from a sorted set leaves nothing behind."""

    async def close(self) -> None:
        await self.client.aclose()


def _redis_down() -> GiftcardError:
    return GiftcardError(ErrorCode.SERVICE_UNAVAILABLE, _REDIS_DOWN_DETAIL)
