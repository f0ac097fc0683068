"""Idempotency keys ride in the use case's own transaction: the claim, the effect and the
answer commit together or not at all. A request that died leaves its key free at once;
a duplicate sent while the first runs waits for it and replays its answer; keys are kept
a day, then purged."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import idempotency
from giftcard.clock import FrozenClock
from giftcard.db import riders
from giftcard.db.tables import api_keys, idempotency_keys
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.idempotency import KeyedRequest, Replayed, StoredResponse
from giftcard.services import Services
from giftcard.unit_of_work import KeptRefusal, UnitOfWork

WAIT_S = 30


def keyed(key: str, body: str = "same body") -> KeyedRequest:
    return KeyedRequest(
        scope="api_key:1",
        key=key,
        fingerprint=idempotency.fingerprint(b"k" * 32, "POST", "/v1/things", body),
        answer=lambda made: StoredResponse(201, f'{{"made":{made}}}'),
        refusal=lambda error: StoredResponse(error.status, f'{{"code":"{error.code}"}}'),
    )


async def make_one(connection: AsyncConnection, now: object, *, carries: bool = True) -> int:
    """The effect under test: one new row, written by a statement that carries riders
    (the key's claim with it), as a use case's first statement does, or that does not."""
    execute = riders.execute if carries else _execute_alone
    return int(
        (
            await execute(
                connection,
                insert(api_keys)
                .values(
                    name="thing",
                    role="merchant",
                    key_hash=secrets.token_bytes(32),
                    prefix="gck_test",
                    created_at=now,
                )
                .returning(api_keys.c.id),
            )
        ).scalar_one()
    )


async def _execute_alone(connection: AsyncConnection, statement: Any) -> Any:
    return await connection.execute(statement)


async def count(services: Services, table: object) -> int:
    async with services.db.transaction(write=False) as connection:
        return int(
            (await connection.execute(select(func.count()).select_from(table))).scalar_one()  # type: ignore[arg-type]
        )


async def act(services: Services, request: KeyedRequest) -> int:
    uow = services.unit_of_work(request)
    return await uow.run(lambda connection: make_one(connection, uow.clock.now()))


async def test_a_retry_replays_the_answer_and_acts_once(services: Services) -> None:
    made = await act(services, keyed("k-replay"))
    with pytest.raises(Replayed) as replayed:
        await act(services, keyed("k-replay"))
    assert replayed.value.response == StoredResponse(201, f'{{"made":{made}}}')
    assert await count(services, api_keys) == 1


async def test_the_same_key_with_another_body_is_refused(services: Services) -> None:
    await act(services, keyed("k-reused", body="first"))
    with pytest.raises(GiftcardError) as reused:
        await act(services, keyed("k-reused", body="second"))
    assert reused.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert await count(services, api_keys) == 1


async def test_a_request_that_died_leaves_its_key_free_at_once(services: Services) -> None:
    """Given a request that made its effect and then died before committing (as a
    process killed mid-request does), when it is retried with the same key at once, the
    retry acts: nothing of the first was kept, not even its claim on the key."""

    class Died(Exception):
        pass

    async def die(connection: AsyncConnection) -> int:
        await make_one(connection, services.clock.now())
        raise Died

    with pytest.raises(Died):
        await services.unit_of_work(keyed("k-died")).run(die)
    assert await count(services, idempotency_keys) == 0

    made = await act(services, keyed("k-died"))
    assert made > 0
    assert await count(services, api_keys) == 1


async def test_a_duplicate_waits_for_the_first_and_replays_its_answer(
    services: Services,
) -> None:
    """Given a request still running under a key, a duplicate sent meanwhile neither acts
    nor fails: it waits until the first commits, then gets the first's answer."""
    inside = asyncio.Event()
    finish = asyncio.Event()

    async def slow(connection: AsyncConnection) -> int:
        made = await make_one(connection, services.clock.now())
        inside.set()
        await asyncio.wait_for(finish.wait(), WAIT_S)
        return made

    first = asyncio.create_task(services.unit_of_work(keyed("k-wait")).run(slow))
    await asyncio.wait_for(inside.wait(), WAIT_S)
    duplicate = asyncio.create_task(act(services, keyed("k-wait")))
    await asyncio.sleep(0.3)
    assert not duplicate.done(), "the duplicate must wait for the first request"
    finish.set()
    made = await asyncio.wait_for(first, WAIT_S)
    with pytest.raises(Replayed) as replayed:
        await asyncio.wait_for(duplicate, WAIT_S)
    assert replayed.value.response == StoredResponse(201, f'{{"made":{made}}}')
    assert await count(services, api_keys) == 1


# SQLite runs one writer at a time: a duplicate cannot act beside the first there.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_duplicate_whose_claim_comes_last_is_rolled_back_and_replays(
    services: Services,
) -> None:
    """Given a use case none of whose statements carries the key's claim (it is written
    just before the answer), when a duplicate runs beside the first, then both act in
    their transactions, only the one whose claim came first commits, and the other is
    rolled back and answered with the first's answer."""
    inside = asyncio.Event()
    finish = asyncio.Event()

    async def slow(connection: AsyncConnection) -> int:
        made = await make_one(connection, services.clock.now(), carries=False)
        inside.set()
        await asyncio.wait_for(finish.wait(), WAIT_S)
        return made

    async def quick(connection: AsyncConnection) -> int:
        return await make_one(connection, services.clock.now(), carries=False)

    first = asyncio.create_task(services.unit_of_work(keyed("k-late")).run(slow))
    await asyncio.wait_for(inside.wait(), WAIT_S)
    duplicate = await asyncio.wait_for(services.unit_of_work(keyed("k-late")).run(quick), WAIT_S)
    finish.set()
    with pytest.raises(Replayed) as replayed:
        await asyncio.wait_for(first, WAIT_S)
    assert replayed.value.response == StoredResponse(201, f'{{"made":{duplicate}}}')
    assert await count(services, api_keys) == 1
    assert await count(services, idempotency_keys) == 1


async def test_a_request_that_fails_on_what_its_key_did_gets_that_answer(
    services: Services,
) -> None:
    """Given a request answered under a key, when a retry's work fails on what the first
    committed (here: any error the use case did not expect, raised before the claim was
    written), then the retry is answered with the first's answer, not the error."""
    made = await act(services, keyed("k-fails"))

    async def fail(connection: AsyncConnection) -> int:
        raise RuntimeError("a unique row the first request made")

    with pytest.raises(Replayed) as replayed:
        await services.unit_of_work(keyed("k-fails")).run(fail)
    assert replayed.value.response == StoredResponse(201, f'{{"made":{made}}}')
    with pytest.raises(RuntimeError):
        await services.unit_of_work(keyed("k-never-answered")).run(fail)


async def test_lasting_refusals_are_remembered_and_passing_ones_are_not(
    services: Services,
) -> None:
    """A refusal about the request (here: invalid_state) is stored under its key and
    replayed; one about the moment (too busy, a lock-out) is not, and the retry acts."""

    async def refuse(code: ErrorCode) -> None:
        async def work(connection: AsyncConnection) -> int:
            await make_one(connection, services.clock.now())
            raise GiftcardError(code, "refused")

        with pytest.raises(GiftcardError) as refused:
            await services.unit_of_work(keyed(f"k-{code}")).run(work)
        assert refused.value.code is code

    await refuse(ErrorCode.INVALID_STATE)
    with pytest.raises(Replayed) as replayed:
        await act(services, keyed(f"k-{ErrorCode.INVALID_STATE}"))
    assert replayed.value.response == StoredResponse(409, '{"code":"invalid_state"}')

    for passing in (ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.TOO_MANY_ATTEMPTS):
        await refuse(passing)
        assert await act(services, keyed(f"k-{passing}")) > 0
    # Only the two retries that acted left a row: refusals roll their effects back.
    assert await count(services, api_keys) == 2


async def test_a_kept_refusal_commits_what_came_before_it_with_its_answer(
    services: Services,
) -> None:
    """A use case that refuses with KeptRefusal (what it wrote counts the refusal) commits
    that, and the refusal under its key, in its one transaction; then it is refused. Only
    a refusal that is remembered can be kept: a key never commits without its answer."""

    async def refuse_keeping(connection: AsyncConnection) -> int:
        await make_one(connection, services.clock.now())
        raise KeptRefusal(GiftcardError(ErrorCode.CODE_NOT_FOUND, "no such code"))

    for request in (keyed("kept"), None):
        with pytest.raises(GiftcardError) as refused:
            await services.unit_of_work(request).run(refuse_keeping)
        assert refused.value.code is ErrorCode.CODE_NOT_FOUND
    assert await count(services, api_keys) == 2
    with pytest.raises(Replayed) as replayed:
        await act(services, keyed("kept"))
    assert replayed.value.response == StoredResponse(404, '{"code":"code_not_found"}')
    assert await count(services, api_keys) == 2

    with pytest.raises(ValueError, match="too_many_attempts"):
        KeptRefusal(GiftcardError(ErrorCode.TOO_MANY_ATTEMPTS, "wait"))


async def test_on_commit_runs_after_commit_and_not_for_a_rolled_back_attempt(
    services: Services,
) -> None:
    seen: list[str] = []

    async def work(connection: AsyncConnection) -> int:
        uow.on_commit(lambda: seen.append("committed"))
        return await make_one(connection, services.clock.now())

    uow: UnitOfWork = services.unit_of_work()
    await uow.run(work)
    assert seen == ["committed"]

    async def refused(connection: AsyncConnection) -> int:
        failing.on_commit(lambda: seen.append("never"))
        raise GiftcardError(ErrorCode.INVALID_STATE, "no")

    failing = services.unit_of_work()
    with pytest.raises(GiftcardError):
        await failing.run(refused)
    assert seen == ["committed"]


async def test_keys_are_kept_a_day_then_purged(services: Services, clock: FrozenClock) -> None:
    await act(services, keyed("k-purge"))

    clock.advance(timedelta(hours=23, minutes=59))
    assert await idempotency.purge(services.db, now=clock.now()) == 0
    assert await count(services, idempotency_keys) == 1

    clock.advance(timedelta(minutes=2))
    assert await idempotency.purge(services.db, now=clock.now()) == 1
    assert await count(services, idempotency_keys) == 0
