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
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import idempotency
from giftcard.clock import Clock
from giftcard.db.engine import Database
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.idempotency import KeyedRequest, Replayed
from giftcard.mail import outbox

T = TypeVar("T")

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


__all__ = ["KeptRefusal", "KeyedRequest", "Replayed", "UnitOfWork", "is_remembered"]
