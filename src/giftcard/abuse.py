"""Abuse limits (SPEC §8): failed redemptions per account and per address, sign-ups per
address, failed log-ins per account.

Counting uses a moving window in the `limits` library: in process memory by default, in
Redis when GIFTCARD_REDIS_URL is set so that every server shares the counts. A refused
redemption counts whatever its reason; a successful one never does. While a requester is
locked, every attempt is refused before the code is even looked at, so the lock tells a
guesser nothing about the codes it tries. Refusals caused by the lock itself do not
count again: the lock ends when the window has moved past the failures that set it.

Checking first and counting after the outcome leaves a gap: attempts sent all at once
would each pass the check before any of them failed and counted, so a guesser could try
any number of codes in one burst. :meth:`AbuseLimits.redeem_attempt` (and
:meth:`AbuseLimits.login_attempt`) close it within a process:
an attempt starts only while the attempts already running could all fail without passing
the limit; otherwise it waits for one of them to finish. Far from the limit attempts run
side by side, near it they take turns, and a successful one is never refused.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
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
    def __init__(self, settings: Settings, *, key_prefix: str = _NAMESPACE) -> None:
        """`key_prefix` namespaces the Redis keys, so that tests sharing one Redis server
        never see each other's counts."""
        self.storage: Storage
        if settings.redis_url:
            self.storage = RedisStorage(
                _async_redis_uri(settings.redis_url),
                implementation="redispy",
                key_prefix=key_prefix,
            )
        else:
            self.storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self.storage)
        self.redeem_account = _Rule("redeem-account", parse(settings.limit_redeem_failures_account))
        self.redeem_address = _Rule("redeem-address", parse(settings.limit_redeem_failures_address))
        self.signup_address = _Rule("signup-address", parse(settings.limit_signups_address))
        self.login_account = _Rule("login-account", parse(settings.limit_login_failures_account))
        # Attempts running in this process, per rule and identity, and a condition that
        # is notified whenever one of them finishes.
        self._in_flight: Counter[tuple[str, str]] = Counter()
        self._turns = asyncio.Condition()

    def redeem_attempt(self, customer_id: int, address: str) -> AbstractAsyncContextManager[None]:
        """Run one redemption attempt inside this block: refused at once while locked,
        and never more attempts at a time than could fail without passing a limit.
        Call :meth:`redeem_refused` inside the block when the attempt is refused."""
        return self._attempt(self._redeem_rules(customer_id, address), detail=_REDEEM_LOCKED_DETAIL)

    def _redeem_rules(self, customer_id: int, address: str) -> tuple[tuple[_Rule, str], ...]:
        return ((self.redeem_account, f"customer:{customer_id}"), (self.redeem_address, address))

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

    def login_attempt(self, email: str) -> AbstractAsyncContextManager[None]:
        """Like :meth:`redeem_attempt`, for a log-in; call :meth:`login_failed` inside."""
        return self._attempt(((self.login_account, email),), detail=_LOGIN_LOCKED_DETAIL)

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

    @asynccontextmanager
    async def _attempt(
        self, rules: tuple[tuple[_Rule, str], ...], *, detail: str
    ) -> AsyncIterator[None]:
        keys = [(rule.name, identity) for rule, identity in rules]
        async with self._turns:
            while True:
                await self._check(*rules, detail=detail)
                if await self._room_for_one_more(rules):
                    break
                # Bounded: each running attempt ends with its request, then notifies.
                await self._turns.wait()
            self._in_flight.update(keys)
        try:
            yield
        finally:
            async with self._turns:
                self._in_flight.subtract(keys)
                for key in keys:
                    if self._in_flight[key] <= 0:
                        del self._in_flight[key]
                self._turns.notify_all()

    async def _room_for_one_more(self, rules: tuple[tuple[_Rule, str], ...]) -> bool:
        """Whether one more attempt may start: if it and every running one failed, no
        rule would count more failures than it allows."""
        for rule, identity in rules:
            stats = await self._limiter.get_window_stats(rule.item, _NAMESPACE, rule.name, identity)
            if self._in_flight[(rule.name, identity)] >= stats.remaining:
                return False
        return True

    async def _hit(self, rule: _Rule, identity: str) -> None:
        await self._limiter.hit(rule.item, _NAMESPACE, rule.name, identity)

    async def reset(self) -> None:
        await self.storage.reset()


_REDEEM_LOCKED_DETAIL = (
    "Too many unsuccessful attempts to redeem a code. Please wait before trying again."
)
_LOGIN_LOCKED_DETAIL = "Too many failed log-ins for this account. Please wait before trying again."


def _async_redis_uri(url: str) -> str:
    for scheme in ("redis://", "rediss://"):
        if url.startswith(scheme):
            return "async+" + url
    return url
