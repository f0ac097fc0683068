"""Group commit for the abuse limits' reservations in Redis: the attempts of one process
that wait while a script call runs go together in the next call, and the script judges
each exactly as if it had reserved alone, after those before it; units given back
together go in one pipeline. (Exactness across processes, with the same tests as the
database's store: tests/integration/test_lockouts.py.)
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as redis

from giftcard.errors import GiftcardError
from giftcard.limits import RedisStore, Refused, Reservation, Rule
from tests.services import free_port

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    built = RedisStore(redis_url, key_prefix=f"batch-test-{secrets.token_hex(4)}")
    yield built
    keys = [key async for key in built.client.scan_iter(match=f"{{{built.key_prefix}}}:*")]
    if keys:
        await built.client.delete(*keys)
    await built.close()


def counting_calls(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of attempts each script call carries, in the order of the calls."""
    carried: list[int] = []
    script = store._reserve_script

    async def counted(*, keys: list[str], args: list[Any]) -> Any:
        answers = await script(keys=keys, args=args)
        carried.append(len(answers))
        return answers

    monkeypatch.setattr(store, "_reserve_script", counted)
    return carried


async def members(store: RedisStore, key: str) -> set[bytes]:
    return set(await store.client.zrange(store.key(key), 0, -1))


async def test_a_batch_is_judged_in_order_as_if_each_attempt_reserved_alone(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempts 0 and 1 fill the shared key (2 allowed); attempt 2 is refused on it, with
    the time until the oldest unit leaves its window, and reserves nothing, not even on
    its own key; attempt 3, on its own key only, is admitted; attempt 4 meets a key that
    allows none. All five go in one call."""
    carried = counting_calls(store, monkeypatch)
    shared, own, none = Rule("shared", 2, 60), Rule("own", 5, 60), Rule("none", 0, 60)
    # A unit on the shared key from 20 s before the others: it leaves its window first.
    await store.reserve([("shared", shared)], token="old", now=NOW - timedelta(seconds=20))

    attempts = [
        [("shared", shared), ("own-0", own)],
        [("shared", shared)],
        [("shared", shared), ("own-2", own)],
        [("own-3", own)],
        [("none", none)],
    ]
    outcomes = await asyncio.gather(
        *(
            store.reserve(slots, token=f"attempt-{number}", now=NOW)
            for number, slots in enumerate(attempts)
        ),
        return_exceptions=True,
    )

    assert carried[-1] == len(attempts), carried
    assert isinstance(outcomes[0], Reservation)
    assert isinstance(outcomes[3], Reservation)
    # The old unit and attempt 0's fill the shared key: attempt 1 is refused too.
    refused = {number: outcome for number, outcome in enumerate(outcomes) if number in (1, 2, 4)}
    for number, outcome in refused.items():
        assert isinstance(outcome, Refused), (number, outcome)
    assert refused[1].full_keys == {store.key("shared")}
    assert refused[2].full_keys == {store.key("shared")}
    assert refused[1].retry_after_s == 40  # the old unit leaves its window in 40 s
    assert refused[4].full_keys == {store.key("none")}
    assert await members(store, "shared") == {b"old", b"attempt-0"}
    assert await members(store, "own-0") == {b"attempt-0"}
    assert await members(store, "own-2") == set()
    assert await members(store, "own-3") == {b"attempt-3"}


async def test_attempts_that_wait_together_go_in_one_call_and_get_exactly_the_limit(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 attempts at once on a key that allows 7, each also on a key of its own: 7 are
    admitted and 33 refused, as one at a time would be, in far fewer calls than 40; the
    units held are exactly the admitted attempts' ones, and given back together they
    are all gone."""
    carried = counting_calls(store, monkeypatch)
    shared, own = Rule("shared", 7, 60), Rule("own", 1, 60)

    async def attempt(number: int) -> Reservation | Refused:
        try:
            return await store.reserve(
                [("shared", shared), (f"own-{number}", own)], token=str(number), now=NOW
            )
        except Refused as refused:
            return refused

    outcomes = await asyncio.gather(*(attempt(number) for number in range(40)))

    admitted = [outcome for outcome in outcomes if isinstance(outcome, Reservation)]
    assert len(admitted) == 7
    for outcome in outcomes:
        assert isinstance(outcome, Reservation) or outcome.full_keys == {store.key("shared")}
    assert sum(carried) == 40
    assert len(carried) < 40, carried
    assert await members(store, "shared") == {r.token.encode() for r in admitted}
    own_units = [await members(store, f"own-{number}") for number in range(40)]
    assert sum(len(units) for units in own_units) == 7

    await asyncio.gather(*(store.give_back(reservation) for reservation in admitted))
    assert await members(store, "shared") == set()
    for reservation in admitted:
        assert await members(store, f"own-{reservation.token}") == set()


async def test_a_redis_that_does_not_answer_refuses_every_attempt_the_call_carried() -> None:
    """A call that fails fails each attempt it carried with service_unavailable: none of
    them goes through uncounted."""
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", key_prefix="batch-test-down")
    rule = Rule("rule", 100, 60)
    try:
        outcomes = await asyncio.gather(
            *(store.reserve([(f"key-{n}", rule)], token=str(n), now=NOW) for n in range(5)),
            return_exceptions=True,
        )
        given_back = await asyncio.gather(
            store.give_back(Reservation((store.key("key-0"),), "0")), return_exceptions=True
        )
    finally:
        await store.close()
    for outcome in [*outcomes, *given_back]:
        assert isinstance(outcome, GiftcardError), outcome
        assert outcome.code.value == "service_unavailable"


async def test_the_script_runs_whole_so_two_processes_never_overfill_a_key(
    redis_url: str,
) -> None:
    """Two stores (two processes' worth), 30 attempts each at once on one key that allows
    12: exactly 12 admitted in all."""
    prefix = f"batch-test-{secrets.token_hex(4)}"
    stores = [RedisStore(redis_url, key_prefix=prefix) for _ in range(2)]
    rule = Rule("shared", 12, 60)

    async def attempt(store: RedisStore, token: str) -> bool:
        try:
            await store.reserve([("shared", rule)], token=token, now=NOW)
        except Refused:
            return False
        return True

    try:
        admitted = await asyncio.gather(
            *(attempt(store, f"{n}-{i}") for n, store in enumerate(stores) for i in range(30))
        )
        assert admitted.count(True) == 12
        client = redis.Redis.from_url(redis_url)
        try:
            assert await client.zcard(stores[0].key("shared")) == 12
            await client.delete(stores[0].key("shared"))
        finally:
            await client.aclose()
    finally:
        for store in stores:
            await store.close()
