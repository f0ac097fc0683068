"""The running service's parts, built once per process and shared by every door."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from giftcard import idempotency, ids, payments
from giftcard.clock import Clock, SystemClock
from giftcard.config import Settings
from giftcard.db.engine import Database
from giftcard.idempotency import KeyedRequest
from giftcard.limits import AbuseLimits
from giftcard.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL_S = 60
# How often each process vacuums the abuse limits' reservations (see
# giftcard.limits.DatabaseStore.tidy): what a busy key leaves behind in this time is what
# a reservation walks at most.
TIDY_INTERVAL_S = 2.0


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Clock
    limits: AbuseLimits
    # Set when this process queued an email, so that its sender wakes at once.
    mail_due: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None) -> Services:
        ids.use_secret(settings.secret_key)
        db = Database(
            settings.database_url,
            pool_size=settings.database_pool_size,
            isolation=settings.database_isolation,
        )
        clock = clock or SystemClock()
        return cls(
            settings=settings, db=db, clock=clock, limits=AbuseLimits.build(settings, db, clock)
        )

    def unit_of_work(self, keyed: KeyedRequest | None = None) -> UnitOfWork:
        """A unit of work for one use case, bound to an idempotency key when given."""
        return UnitOfWork(self.db, self.clock, keyed=keyed, mail_wakeup=self.mail_wakeup)

    def mail_wakeup(self) -> None:
        """Wake this process's email sender: a use case that queued a message passes this
        to ``uow.on_commit``, so that the email leaves now rather than at the next poll
        (another process's sender finds it within a second anyway)."""
        self.mail_due.set()

    async def close(self) -> None:
        await self.limits.close()
        await self.db.dispose()

    async def maintain(self, *, interval_s: float = MAINTENANCE_INTERVAL_S) -> None:
        """Housekeeping while the server runs: release holds past their expiry, forget
        idempotency keys past their time and abuse-limit units past their window. Safe
        with several servers: every hold is claimed by a guarded update, and each purge
        deletes a bounded batch."""
        while True:
            await asyncio.sleep(interval_s)
            await self.maintain_once()

    async def tidy(self, *, interval_s: float = TIDY_INTERVAL_S) -> None:
        """Every `interval_s`, reclaim what the abuse limits' reservations leave behind
        (see :meth:`AbuseLimits.tidy`). A failure is logged once, not at every turn, until
        a turn succeeds again."""
        failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.limits.tidy()
            except Exception:
                if not failing:
                    log.exception("tidying the abuse limits failed; will retry")
                failing = True
            else:
                failing = False

    async def maintain_once(self) -> None:
        try:
            released = await payments.expire_holds(self.db, clock=self.clock)
            purged = await idempotency.purge(self.db, now=self.clock.now())
            units_purged = await self.limits.purge()
        except Exception:
            log.exception("maintenance failed; will retry")
            return
        if released or purged or units_purged:
            log.info(
                "maintenance",
                extra={
                    "holds_released": released,
                    "keys_purged": purged,
                    "limit_units_purged": units_purged,
                },
            )
