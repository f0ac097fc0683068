"""The running service's parts, built once per process and shared by every door."""

from __future__ import annotations

from dataclasses import dataclass

from giftcard.abuse import AbuseLimits
from giftcard.clock import Clock, SystemClock
from giftcard.config import Settings
from giftcard.db.engine import Database


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
