"""Group commit for the abuse limits' reservations on PostgreSQL: the attempts of one
process that wait while a reservation call runs go together in the next call of
`giftcard_reserve_limits_many`, and each is judged exactly as if it had reserved alone,
after those before it. (Exactness across processes: tests/integration/test_lockouts.py.)
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError

from giftcard.db.tables import limit_reservations
from giftcard.limits import DatabaseStore, Refused, Reservation, Rule
from giftcard.services import Services
from tests.conftest import sent_statements

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

CALL = text(
    "SELECT * FROM giftcard_reserve_limits_many(CAST(:lock_ids AS bigint[]), "
    "CAST(:attempts AS integer[]), CAST(:keys AS text[]), CAST(:maxima AS integer[]), "
    "CAST(:expiries AS timestamptz[]), CAST(:at AS timestamptz))"
)


async def call(services: Services, at: datetime, lines: list[tuple[int, str, int]]) -> list[Any]:
    """Call the function with rows (attempt, key, maximum), each unit a minute long."""
    async with services.db.engine.connect() as connection:
        await connection.execution_options(isolation_level="READ COMMITTED")
        async with connection.begin():
            rows = await connection.execute(
                CALL,
                {
                    "lock_ids": [1, 2, 3],
                    "attempts": [attempt for attempt, _, _ in lines],
                    "keys": [key for _, key, _ in lines],
                    "maxima": [maximum for _, _, maximum in lines],
                    "expiries": [at + timedelta(minutes=1) for _ in lines],
                    "at": at,
                },
            )
            return list(rows.all())


async def test_a_batch_is_judged_in_order_as_if_each_attempt_reserved_alone(
    services: Services,
) -> None:
    """Attempts 0 and 1 fill the shared key (2 allowed); attempt 2 is refused on it, with
    the expiry of the oldest unit in its window, and reserves nothing, not even on its
    own key; attempt 3, on its own key only, is admitted; attempt 4 meets a key that
    allows none; a key that held a unit before the call counts it, and that unit's
    expiry is its first."""
    now = services.clock.now()
    earlier_expiry = now + timedelta(seconds=30)
    async with services.db.transaction() as connection:
        await connection.execute(
            insert(limit_reservations), [{"limit_key": "old", "expires_at": earlier_expiry}]
        )

    rows = await call(
        services,
        now,
        [
            (0, "shared", 2),
            (0, "own-0", 5),
            (1, "shared", 2),
            (2, "shared", 2),
            (2, "own-2", 5),
            (3, "own-3", 5),
            (4, "none", 0),
            (5, "old", 2),
            (6, "old", 2),
        ],
    )

    reserved = Counter(row.out_attempt for row in rows if row.reserved_id is not None)
    assert reserved == {0: 2, 1: 1, 3: 1, 5: 1}
    refused = {
        (row.out_attempt, row.out_key): row.first_expiry for row in rows if not row.reserved_id
    }
    assert refused == {
        (2, "shared"): now + timedelta(minutes=1),
        (4, "none"): None,
        (6, "old"): earlier_expiry,
    }
    async with services.db.transaction(write=False) as connection:
        held: dict[str, int] = dict(
            (
                await connection.execute(
                    select(limit_reservations.c.limit_key, func.count()).group_by(
                        limit_reservations.c.limit_key
                    )
                )
            ).all()
        )
    assert held == {"shared": 2, "own-0": 1, "own-3": 1, "old": 2}


async def shared_key_with_one_unit_held(
    services: Services, *, attempts: int
) -> list[tuple[int, str, int]]:
    """A key "shared" that allows 4 units and holds one, and the lines of `attempts`
    attempts, each on it and on a key of its own that allows 1."""
    async with services.db.transaction() as connection:
        await connection.execute(
            insert(limit_reservations),
            [{"limit_key": "shared", "expires_at": services.clock.now() + timedelta(seconds=30)}],
        )
    return [
        (n, key, 4 if key == "shared" else 1)
        for n in range(attempts)
        for key in ("shared", f"own-{n}")
    ]


async def test_a_batch_with_room_for_all_of_it_takes_every_unit_at_once(
    services: Services,
) -> None:
    """When every key has room for a unit of each attempt of the batch on it (here the
    shared key exactly so: 1 held, 3 attempts, 4 allowed), every attempt is admitted,
    each answered with units of its own on each of its keys, told to it by number."""
    lines = await shared_key_with_one_unit_held(services, attempts=3)

    rows = await call(services, services.clock.now(), lines)

    assert sorted((row.out_attempt, row.out_key) for row in rows) == sorted(
        (n, key) for n, key, _ in lines
    )
    assert all(row.first_expiry is None for row in rows)
    async with services.db.transaction(write=False) as connection:
        units = dict(
            (
                await connection.execute(
                    select(limit_reservations.c.id, limit_reservations.c.limit_key)
                )
            ).all()
        )
    assert {row.reserved_id: row.out_key for row in rows}.items() <= units.items()
    assert len(units) == 1 + len(lines)


async def test_a_batch_one_unit_past_the_room_is_judged_attempt_by_attempt(
    services: Services,
) -> None:
    """One unit more than that (1 held, 4 attempts, 4 allowed): the first three are
    admitted and the last refused on the shared key, reserving nothing on its own key."""
    lines = await shared_key_with_one_unit_held(services, attempts=4)

    rows = await call(services, services.clock.now(), lines)

    assert Counter(row.out_attempt for row in rows if row.reserved_id) == {0: 2, 1: 2, 2: 2}
    assert [(row.out_attempt, row.out_key) for row in rows if not row.reserved_id] == [
        (3, "shared")
    ]


async def test_the_function_runs_only_where_it_counts_under_its_locks(
    services: Services,
) -> None:
    """Each statement of the function reads what was committed before it started only at
    READ COMMITTED; in a SERIALIZABLE transaction, whose snapshot is older than its
    locks, it refuses to run and reserves nothing."""
    async with services.db.engine.connect() as connection:
        await connection.execution_options(isolation_level="SERIALIZABLE")
        with pytest.raises(DBAPIError, match="READ COMMITTED"):
            async with connection.begin():
                await connection.execute(
                    CALL,
                    {
                        "lock_ids": [1],
                        "attempts": [0],
                        "keys": ["test:key"],
                        "maxima": [5],
                        "expiries": [services.clock.now() + timedelta(minutes=1)],
                        "at": services.clock.now(),
                    },
                )
    assert await call(services, services.clock.now(), [(0, "test:key", 5)])


async def test_attempts_that_wait_together_go_in_one_call_and_get_exactly_the_limit(
    services: Services,
) -> None:
    """40 attempts at once on a key that allows 7, each also on a key of its own: 7 are
    admitted and 33 refused, as one at a time would be, in far fewer calls than 40,
    and the units held are exactly the admitted attempts' ones."""
    store = DatabaseStore(services.db, key_prefix="batch-test")
    shared = Rule("shared", 7, 60)
    own = Rule("own", 1, 60)
    now = services.clock.now()

    async def attempt(number: int) -> Refused | None:
        try:
            await store.reserve(
                [("shared", shared), (f"own-{number}", own)], token=str(number), now=now
            )
        except Refused as refused:
            return refused
        return None

    with sent_statements(services.db) as sent:
        refusals = await asyncio.gather(*(attempt(number) for number in range(40)))

    assert refusals.count(None) == 7
    for refused in refusals:
        assert refused is None or refused.full_keys == {store.key("shared")}
        assert refused is None or 1 <= refused.retry_after_s <= 60
    # How many attempts each call carried (its second parameter: their numbers).
    carried = [len(set(p[1])) for s, p in sent if "giftcard_reserve_limits_many" in s]
    assert sum(carried) == 40
    assert len(carried) < 40, carried
    async with services.db.transaction(write=False) as connection:
        units = (
            await connection.execute(select(func.count()).select_from(limit_reservations))
        ).scalar_one()
    assert units == 7 * 2


async def test_a_failing_call_fails_the_attempts_it_carried_and_the_next_ones_go_on(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that fails (here, its database refuses it) fails each attempt it carried
    with its error; the attempts that waited for it go in the next call, and a later
    attempt finds the store working."""
    store = DatabaseStore(services.db, key_prefix="batch-test")
    rule = Rule("rule", 100, 60)
    now = services.clock.now()
    run_alone = services.db.run_alone
    calls = 0

    async def first_call_fails(work: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.05)  # the others come to wait meanwhile
            raise RuntimeError("the database refused the call")
        return await run_alone(work)

    monkeypatch.setattr(services.db, "run_alone", first_call_fails)
    first = asyncio.ensure_future(store.reserve([("a", rule)], token="first", now=now))
    await asyncio.sleep(0.01)
    others = [
        asyncio.ensure_future(store.reserve([(f"b-{n}", rule)], token=str(n), now=now))
        for n in range(5)
    ]

    with pytest.raises(RuntimeError, match="refused the call"):
        await first
    reservations = await asyncio.gather(*others)
    assert all(len(reservation.row_ids) == 1 for reservation in reservations)
    assert calls == 2
    assert (await store.reserve([("c", rule)], token="later", now=now)).row_ids


async def test_an_attempt_given_up_while_it_waits_leaves_the_others_to_their_answers(
    services: Services,
) -> None:
    """A request that goes away (its task cancelled) while its reservation waits does not
    hold up or fail the attempts that wait with it."""
    store = DatabaseStore(services.db, key_prefix="batch-test")
    rule = Rule("rule", 100, 60)
    now = services.clock.now()
    attempts = [
        asyncio.ensure_future(store.reserve([(f"k-{n}", rule)], token=str(n), now=now))
        for n in range(6)
    ]
    await asyncio.sleep(0)  # all six are waiting; the first call is on its way
    attempts[3].cancel()

    done = await asyncio.gather(*attempts, return_exceptions=True)

    assert isinstance(done[3], asyncio.CancelledError)
    for number, reservation in enumerate(done):
        if number != 3:
            assert isinstance(reservation, Reservation)
            assert len(reservation.row_ids) == 1


async def test_the_count_runs_through_the_keys_index_whatever_the_statistics_say(
    services: Services,
) -> None:
    """A busy key gathers dead units faster than autovacuum removes them; counted by a
    sequential or bitmap scan, every call would walk them all. The function runs with
    neither (migration 0013), so that its plan is an index scan whatever the table
    looked like when it was made."""
    async with services.db.engine.connect() as connection:
        settings = (
            await connection.execute(
                text("SELECT proconfig FROM pg_proc WHERE proname = 'giftcard_reserve_limits_many'")
            )
        ).scalar_one()
    assert set(settings or []) >= {"enable_seqscan=off", "enable_bitmapscan=off"}


LOCK_AND_COUNT = text(
    "SELECT out_key, units FROM giftcard_lock_and_count_limits("
    "CAST(:lock_ids AS bigint[]), CAST(:keys AS text[]), CAST(:at AS timestamptz))"
)


async def test_the_count_after_a_wait_for_the_lock_sees_what_its_holder_committed(
    services: Services,
) -> None:
    """A redemption that runs by itself locks its keys and counts their units in one
    call (migration 0014). When another transaction holds a key's lock, the call waits
    for it, and then counts the unit that transaction kept and committed: the count is
    not read before the lock was granted."""
    now = services.clock.now()
    arguments = {"lock_ids": [42], "keys": ["hot"], "at": now}
    async with services.db.engine.connect() as holder:
        await holder.execution_options(isolation_level="READ COMMITTED")
        async with holder.begin():
            assert (await holder.execute(LOCK_AND_COUNT, arguments)).all() == []

            async def count_after_the_lock() -> list[Any]:
                async with services.db.engine.connect() as waiter:
                    await waiter.execution_options(isolation_level="READ COMMITTED")
                    async with waiter.begin():
                        return list((await waiter.execute(LOCK_AND_COUNT, arguments)).all())

            waiting = asyncio.ensure_future(count_after_the_lock())
            await asyncio.sleep(0.3)
            assert not waiting.done()
            await holder.execute(
                insert(limit_reservations),
                [{"limit_key": "hot", "expires_at": now + timedelta(minutes=1)}],
            )
    assert [tuple(row) for row in await asyncio.wait_for(waiting, 10)] == [("hot", 1)]


async def test_the_lock_and_count_call_refuses_a_snapshot_older_than_its_lock(
    services: Services,
) -> None:
    """At REPEATABLE READ the call's count would read the transaction's first snapshot,
    older than the lock: the function refuses to run there."""
    async with services.db.engine.connect() as connection:
        await connection.execution_options(isolation_level="REPEATABLE READ")
        with pytest.raises(DBAPIError, match="runs at READ COMMITTED"):
            async with connection.begin():
                await connection.execute(
                    LOCK_AND_COUNT, {"lock_ids": [7], "keys": ["k"], "at": services.clock.now()}
                )


async def units_held(services: Services, count: int) -> Reservation:
    """`count` units of one busy key, in the window for 15 minutes, as one reservation."""
    later = services.clock.now() + timedelta(minutes=15)
    async with services.db.transaction() as connection:
        row_ids = (
            await connection.execute(
                insert(limit_reservations).returning(limit_reservations.c.id),
                [{"limit_key": "busy", "expires_at": later}] * count,
            )
        ).scalars()
        return Reservation(("busy",), "token", tuple(row_ids))


async def test_tidying_reclaims_what_units_given_back_leave_behind(services: Services) -> None:
    """3,000 units given back leave pages of dead rows; the store's tidying (what each
    serving process runs every few seconds) vacuums them away. A process that has given
    nothing back since its last turn does not vacuum at all: an idle server stays idle."""
    size = text("SELECT pg_relation_size('limit_reservations')")
    vacuums = text(
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'limit_reservations'"
    )
    reservation = await units_held(services, 3000)
    store = services.limits.store
    await store.tidy()  # nothing given back yet: nothing done
    async with services.db.transaction() as connection:
        vacuumed_before = (await connection.execute(vacuums)).scalar_one()
    await store.give_back(reservation)
    async with services.db.transaction() as connection:
        left_behind = (await connection.execute(size)).scalar_one()
    assert left_behind > 8192

    await store.tidy()
    await store.tidy()  # nothing given back since the last turn: nothing done

    async with services.db.transaction() as connection:
        assert (await connection.execute(size)).scalar_one() < left_behind
        assert (await connection.execute(vacuums)).scalar_one() == vacuumed_before + 1
        counted = select(func.count()).select_from(limit_reservations)
        assert (await connection.execute(counted)).scalar_one() == 0


async def test_two_processes_tidying_at_once_neither_waits_nor_fails(services: Services) -> None:
    """Every serving process tidies; one whose turn meets another's vacuum skips the
    table rather than waiting for it or failing."""
    other = Services.build(services.settings, clock=services.clock)
    try:
        for _ in range(3):
            for svc in (services, other):
                await svc.limits.store.give_back(await units_held(svc, 200))
            await asyncio.gather(services.limits.tidy(), other.limits.tidy())
    finally:
        await other.close()


async def test_the_tidying_loop_reports_a_failure_once_and_goes_on(
    services: Services, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop every serving process runs: three failing turns are reported once, not
    three times; after a turn that succeeds, the next failure is reported again; a
    failure never stops the loop."""
    outcomes = iter([OSError("down")] * 3 + [None] + [OSError("down again")] + [None] * 100)
    turns = 0
    seventh = asyncio.Event()

    async def tidy() -> None:
        nonlocal turns
        turns += 1
        if turns == 7:
            seventh.set()
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(services.limits, "tidy", tidy)
    loop = asyncio.create_task(services.tidy(interval_s=0.001))
    await asyncio.wait_for(seventh.wait(), timeout=10)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop

    reported = [record for record in caplog.records if "tidying" in record.getMessage()]
    assert [str(record.exc_info[1]) for record in reported if record.exc_info] == [
        "down",
        "down again",
    ]
