"""The running service's parts, built once per process and shared by every door."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from giftcard import idempotency
from giftcard.abuse import AbuseLimits
from giftcard.clock import Clock, SystemClock
from giftcard.config import Settings
from giftcard.db.engine import Database

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL_S = 600


@dataclass
class Services:
    settings: Settings
    db: Database
    clock: Clock
    limits: AbuseLimits

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None) -> Services:
        return cls(
            settings=settings,
            db=Database(settings.database_url, pool_size=settings.database_pool_size),
            clock=clock or SystemClock(),
            limits=AbuseLimits(settings),
        )

    async def close(self) -> None:
        await self.db.dispose()

    async def maintain(self, *, interval_s: float = MAINTENANCE_INTERVAL_S) -> None:
        """Housekeeping while the server runs: forget idempotency keys past their time.
        Safe with several servers: each run deletes a bounded batch of old rows."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                purged = await idempotency.purge(self.db, now=self.clock.now())
            except Exception:
                log.exception("idempotency key purge failed; will retry")
                continue
            if purged:
                log.info("purged idempotency keys", extra={"count": purged})
