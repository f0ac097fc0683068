"""Abuse limits (SPEC §8): failed redemptions per account and per address, sign-ups per
address, failed log-ins per account.

Counting uses a moving window in the `limits` library: in process memory by default, in
Redis when GIFTCARD_REDIS_URL is set so that every server shares the counts. A refused
redemption counts whatever its reason; a successful one never does. While a requester is
locked, every attempt is refused before the code is even looked at, so the lock tells a
guesser nothing about the codes it tries. Refusals caused by the lock itself do not
count again: the lock ends when the window has moved past the failures that set it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from giftcard.config import Settings
from giftcard.errors import TooManyAttempts

_NAMESPACE = "giftcard"


@dataclass(frozen=True)
class _Rule:
    name: str
    item: RateLimitItem


class AbuseLimits:
    def __init__(self, settings: Settings) -> None:
        self.storage: Storage
        if settings.redis_url:
            self.storage = RedisStorage(
                _async_redis_uri(settings.redis_url),
                implementation="redispy",
                key_prefix=_NAMESPACE,
            )
        else:
            self.storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self.storage)
        self.redeem_account = _Rule("redeem-account", parse(settings.limit_redeem_failures_account))
        self.redeem_address = _Rule("redeem-address", parse(settings.limit_redeem_failures_address))
        self.signup_address = _Rule("signup-address", parse(settings.limit_signups_address))
        self.login_account = _Rule("login-account", parse(settings.limit_login_failures_account))

    async def check_redeem(self, customer_id: int, address: str) -> None:
        await self._check(
            (self.redeem_account, f"customer:{customer_id}"),
            (self.redeem_address, address),
            detail="Too many unsuccessful attempts to redeem a code. Please wait before "
            "trying again.",
        )

    async def redeem_refused(self, customer_id: int, address: str) -> None:
        await self._hit(self.redeem_account, f"customer:{customer_id}")
        await self._hit(self.redeem_address, address)

    async def signup_attempt(self, address: str) -> None:
        """Count a sign-up from `address`, refusing it if the address is over its limit."""
        await self._check(
            (self.signup_address, address),
            detail="Too many accounts were created from this address. Please try later.",
        )
        await self._hit(self.signup_address, address)

    async def check_login(self, email: str) -> None:
        await self._check(
            (self.login_account, email),
            detail="Too many failed log-ins for this account. Please wait before trying again.",
        )

    async def login_failed(self, email: str) -> None:
        await self._hit(self.login_account, email)

    async def _check(self, *rules: tuple[_Rule, str], detail: str) -> None:
        retry_after_s = 0
        for rule, identity in rules:
            if not await self._limiter.test(rule.item, _NAMESPACE, rule.name, identity):
                stats = await self._limiter.get_window_stats(
                    rule.item, _NAMESPACE, rule.name, identity
                )
                retry_after_s = max(retry_after_s, math.ceil(stats.reset_time - time.time()))
        if retry_after_s:
            raise TooManyAttempts(detail, retry_after_s=retry_after_s)

    async def _hit(self, rule: _Rule, identity: str) -> None:
        await self._limiter.hit(rule.item, _NAMESPACE, rule.name, identity)

    async def reset(self) -> None:
        await self.storage.reset()


def _async_redis_uri(url: str) -> str:
    for scheme in ("redis://", "rediss://"):
        if url.startswith(scheme):
            return "async+" + url
    return url
