"""Idempotency keys are kept at least 24 hours, then purged; a claim whose request died
can be taken over once it is stale, but never while it is fresh."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from giftcard import idempotency
from giftcard.clock import FrozenClock
from giftcard.db.tables import idempotency_keys
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.services import Services

FINGERPRINT = b"f" * 32


async def count_keys(services: Services) -> int:
    async with services.db.transaction(write=False) as connection:
        return int(
            (
                await connection.execute(select(func.count()).select_from(idempotency_keys))
            ).scalar_one()
        )


async def test_keys_are_kept_a_day_then_purged(services: Services, clock: FrozenClock) -> None:
    claimed = await idempotency.claim(
        services.db, scope="customer:1", key="k1", request_fingerprint=FINGERPRINT, now=clock.now()
    )
    assert isinstance(claimed, idempotency.Claim)
    await idempotency.complete_alone(services.db, claimed, status=201, body="{}")

    clock.advance(timedelta(hours=23, minutes=59))
    assert await idempotency.purge(services.db, now=clock.now()) == 0
    assert await count_keys(services) == 1

    clock.advance(timedelta(minutes=2))
    assert await idempotency.purge(services.db, now=clock.now()) == 1
    assert await count_keys(services) == 0


async def test_a_fresh_claim_is_in_use_and_a_stale_one_is_taken_over(
    services: Services, clock: FrozenClock
) -> None:
    """A request that died after claiming its key did nothing (its effect and its record
    commit together), so after LOCK_STALE_S the key may be claimed again; before that a
    duplicate is told the key is in use."""
    first = await idempotency.claim(
        services.db, scope="customer:1", key="k2", request_fingerprint=FINGERPRINT, now=clock.now()
    )
    assert isinstance(first, idempotency.Claim)
    with pytest.raises(GiftcardError) as in_use:
        await idempotency.claim(
            services.db,
            scope="customer:1",
            key="k2",
            request_fingerprint=FINGERPRINT,
            now=clock.now(),
        )
    assert in_use.value.code is ErrorCode.IDEMPOTENCY_KEY_IN_USE

    clock.advance(timedelta(seconds=idempotency.LOCK_STALE_S + 1))
    second = await idempotency.claim(
        services.db, scope="customer:1", key="k2", request_fingerprint=FINGERPRINT, now=clock.now()
    )
    assert isinstance(second, idempotency.Claim)
    # The first request, had it woken up, can no longer record its result.
    with pytest.raises(GiftcardError) as lost:
        await idempotency.complete_alone(services.db, first, status=201, body="{}")
    assert lost.value.code is ErrorCode.IDEMPOTENCY_KEY_IN_USE
    await idempotency.complete_alone(services.db, second, status=201, body='{"ok":true}')
    replay = await idempotency.claim(
        services.db, scope="customer:1", key="k2", request_fingerprint=FINGERPRINT, now=clock.now()
    )
    assert replay == idempotency.Replay(201, '{"ok":true}')
