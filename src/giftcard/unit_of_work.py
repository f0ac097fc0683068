"""The unit of work: one use case, one database transaction, retried where the database
allows it, with what must ride along.

Every writing use case runs its work through :meth:`UnitOfWork.run`, the one retry place
(:meth:`giftcard.db.engine.Database.run`: serialization failures, deadlocks, SQLite's
"database is locked"). Bound to an idempotency key, the unit of work claims the key in
the transaction (riding with the work's first statement that carries riders) and stores
the door's answer before it commits (see :mod:`giftcard.idempotency`); callbacks given
to :meth:`UnitOfWork.on_commit` run only once the transaction has committed, never for
an attempt that was rolled back. A transaction that queued an email wakes this process's
sender once it committed.

Which refusals are remembered under a key is decided here, for every door alike: a
refusal that says something lasting about the request (an unknown code, a balance too
low, a payment in the wrong state) is stored, so the retry is answered the same way; one
that is about the moment (a lock-out, a busy service, a key reused) is not, and the retry
is judged afresh. A refusal of the request's own shape (a malformed or mistyped code, an
amount out of range) comes before the unit of work runs and is not stored either: the
retry is refused the same way without it.

A refused transaction is rolled back and the refusal stored in one of its own, unless
the work refuses with :class:`KeptRefusal`: what it wrote before refusing (what the
refusal counts) then commits, with the refusal stored under the key, in one transaction.

:func:`run_together` is group commit for the hot use cases on PostgreSQL (redemptions,
payments): the units of work of many requests done by one transaction of a few
statements over arrays, their keys claimed and answered in it as here, and whatever
that transaction cannot settle left to :meth:`UnitOfWork.run`, one by one.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import idempotency
from giftcard.clock import Clock
from giftcard.db.engine import Database, is_database_unreachable, unavailable
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.idempotency import KeyedRequest, Replayed
from giftcard.mail import outbox
from giftcard.metrics import GROUP_COMMITS

T = TypeVar("T")

log = logging.getLogger(__name__)

# Refusals that depend on when the request came, not on what it asked.
_PASSING_REFUSALS = frozenset(
    {
        ErrorCode.TOO_MANY_ATTEMPTS,
        ErrorCode.IDEMPOTENCY_KEY_IN_USE,
        ErrorCode.IDEMPOTENCY_KEY_REUSED,
        ErrorCode.SERVICE_UNAVAILABLE,
    }
)

OnCommit = Callable[[], Awaitable[None] | None]


class KeptRefusal(Exception):
    """Raised by a unit of work's `work` to refuse with `error` while keeping what its
    transaction wrote so far: the transaction commits, with `error` stored under the
    idempotency key, and then `error` is raised. Only for a refusal that is remembered
    (a key is never committed without its answer), raised before the work wrote anything
    that the refusal undoes."""

    def __init__(self, error: GiftcardError) -> None:
        if not is_remembered(error):
            raise ValueError(f"{error.code.value} is not remembered under a key: it cannot be kept")
        super().__init__(error.code.value)
        self.error = error


def is_remembered(error: GiftcardError) -> bool:
    """Whether a retry of a request refused with `error` gets the same refusal back."""
    return error.status < 500 and error.code not in _PASSING_REFUSALS


class UnitOfWork:
    """One use case's transaction. Build one per request (``Services.unit_of_work``)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        keyed: KeyedRequest | None = None,
        mail_wakeup: Callable[[], None] | None = None,
    ):
        self.db = db
        self.clock = clock
        self.keyed = keyed
        self._mail_wakeup = mail_wakeup
        self._on_commit: list[OnCommit] = []
        self._used = False

    def on_commit(self, callback: OnCommit) -> None:
        """Run `callback` after the transaction commits (not for a rolled-back attempt)."""
        self._on_commit.append(callback)

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in one transaction, retried as the database allows; commit once.

        Raises :class:`~giftcard.idempotency.Replayed` when the bound key already has an
        answer: the door gives that answer back instead of a new one."""
        if self._used:
            raise RuntimeError("a unit of work runs one transaction")
        self._used = True
        keyed = self.keyed

        async def attempt(connection: AsyncConnection) -> T | KeptRefusal:
            self._on_commit.clear()
            outbox.take_queued(connection)
            outcome: T | KeptRefusal
            if keyed is None:
                try:
                    outcome = await work(connection)
                except KeptRefusal as refusal:
                    outcome = refusal
            else:
                claimed = idempotency.claim(connection, keyed, now=self.clock.now())
                try:
                    outcome = await work(connection)
                    answer = keyed.answer(outcome)
                except KeptRefusal as refusal:
                    outcome, answer = refusal, keyed.refusal(refusal.error)
                await idempotency.complete(connection, claimed, answer)
            if outbox.take_queued(connection) and self._mail_wakeup is not None:
                self._on_commit.append(self._mail_wakeup)
            return outcome

        try:
            outcome = await self.db.run(attempt)
        except Replayed:
            raise
        except GiftcardError as error:
            if keyed is not None and is_remembered(error):
                await self._remember(keyed, error)
            raise
        except Exception:
            # The work may have failed on what another request under the key did and
            # committed (its claim rides with a later statement than the work's first):
            # that request's answer is this one's.
            if keyed is not None:
                await idempotency.replay_if_answered(self.db, keyed)
            raise
        for callback in self._on_commit:
            done = callback()
            if inspect.isawaitable(done):
                await done
        if isinstance(outcome, KeptRefusal):
            raise outcome.error
        return outcome

    async def _remember(self, keyed: KeyedRequest, error: GiftcardError) -> None:
        """Store a refusal under the key, in a transaction of its own (the refused one
        was rolled back). If another request with the key answered meanwhile, its
        answer is the one to give: :class:`Replayed` carries it."""

        async def record(connection: AsyncConnection) -> None:
            claimed = idempotency.claim(connection, keyed, now=self.clock.now())
            await idempotency.complete(connection, claimed, keyed.refusal(error))

        await self.db.run(record)


class RunAlone:
    """What :func:`run_together` answers for a unit of work its batch did not settle: it
    is to run by itself, with :meth:`UnitOfWork.run`."""


RUN_ALONE = RunAlone()


async def run_together(
    db: Database,
    units: Sequence[UnitOfWork],
    distinct: Sequence[Hashable],
    settle: Callable[[AsyncConnection, list[int], datetime], Awaitable[dict[int, T]]],
    *,
    what: str,
) -> list[T | RunAlone]:
    """Group commit: the work of many units of work of one use case in one transaction,
    for a use case whose work can be done for many requests by a few statements over
    arrays. `settle` is given the numbers of the units to do (in `units`' order) and
    returns the result of each it did; what it leaves, it must not have written. Their
    keys are claimed first and answered last, as :meth:`UnitOfWork.run` does for one;
    each is answered only once the transaction has committed.

    A unit that is not settled is answered :data:`RUN_ALONE`, to run by itself: one whose
    key another request holds, the second of two with one key or one `distinct` value
    (what the use case cannot do twice in one statement), one that `settle` leaves (a
    refusal, worded and remembered as it is for one alone), and one alone in its batch
    (it costs fewer statements by itself). If the batch fails, all of them run alone;
    if its connection was lost, whether it committed is unknown, and all of them are
    refused as one alone would be: :func:`~giftcard.db.engine.unavailable`."""
    if len(units) < 2:
        return [RUN_ALONE for _ in units]
    chosen: list[int] = []
    seen: set[Hashable] = set()
    keys: set[tuple[str, str]] = set()
    for number, (unit, value) in enumerate(zip(units, distinct, strict=True)):
        key = (unit.keyed.scope, unit.keyed.key) if unit.keyed else None
        if value in seen or key in keys:
            continue
        seen.add(value)
        if key:
            keys.add(key)
        chosen.append(number)

    async def work(connection: AsyncConnection) -> dict[int, T]:
        now = units[0].clock.now()
        claims = await idempotency.claim_many(
            connection, [units[number].keyed for number in chosen], now=now
        )
        claimed = dict(zip(chosen, claims, strict=True))
        going = [n for n in chosen if units[n].keyed is None or claimed[n] is not None]
        settled = await settle(connection, going, now) if going else {}
        answers = [
            (claim, keyed.answer(settled[n]))
            for n, claim in claimed.items()
            if claim is not None and n in settled and (keyed := units[n].keyed) is not None
        ]
        dropped = [claim for n, claim in claimed.items() if claim is not None and n not in settled]
        if answers or dropped:
            await idempotency.complete_many(connection, answers, dropped)
        return settled

    try:
        async with db.transaction() as connection:
            settled = await work(connection)
    except Exception as error:
        if is_database_unreachable(error):
            raise unavailable() from error
        log.warning("a batch of %s failed; each runs by itself", what, exc_info=True)
        return [RUN_ALONE for _ in units]
    if settled:
        GROUP_COMMITS.labels(use_case=what).observe(len(settled))
    return [settled.get(number, RUN_ALONE) for number in range(len(units))]


__all__ = [
    "RUN_ALONE",
    "KeptRefusal",
    "KeyedRequest",
    "Replayed",
    "RunAlone",
    "UnitOfWork",
    "is_remembered",
    "run_together",
]
