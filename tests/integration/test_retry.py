"""The one place that retries transactions: serialization failures, deadlocks and a
server refusing a new connection are run again, a bounded number of times; anything else
is raised at once."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import event, func, make_url, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard.db import engine as engine_module
from giftcard.db.engine import RETRY_ATTEMPTS_MAX, Database, is_retryable
from giftcard.db.tables import cards
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.services import Services
from giftcard.verify import verify
from tests.conftest import api_key, issue


class FakeDriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def driver_error(sqlstate: str) -> DBAPIError:
    return DBAPIError("UPDATE ...", None, FakeDriverError(sqlstate))


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "RETRY_BACKOFF_BASE_S", 0.0)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("sqlstate", ["40001", "40P01", "53300", "57P03"])
async def test_retryable_failures_are_run_again(
    database_url: str, sqlstate: str, no_backoff: None
) -> None:
    db = Database(database_url)
    attempts = 0

    async def work(connection: AsyncConnection) -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise driver_error(sqlstate)
        return "done"

    try:
        assert await db.run(work) == "done"
    finally:
        await db.dispose()
    assert attempts == 3


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_retries_are_bounded(database_url: str, no_backoff: None) -> None:
    db = Database(database_url)
    attempts = 0

    async def work(connection: AsyncConnection) -> None:
        nonlocal attempts
        attempts += 1
        raise driver_error("40001")

    try:
        with pytest.raises(GiftcardError) as busy:
            await db.run(work)
    finally:
        await db.dispose()
    assert attempts == RETRY_ATTEMPTS_MAX
    # Out of retries the caller is told to come back (503), not shown a bug (500).
    assert busy.value.code is ErrorCode.SERVICE_UNAVAILABLE


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_other_failures_are_not_retried(database_url: str, no_backoff: None) -> None:
    db = Database(database_url)
    attempts = 0

    async def work(connection: AsyncConnection) -> None:
        nonlocal attempts
        attempts += 1
        raise driver_error("23505")

    try:
        with pytest.raises(DBAPIError):
            await db.run(work)
    finally:
        await db.dispose()
    assert attempts == 1


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_real_serialization_failure_is_recognised(database_url: str) -> None:
    """Two SERIALIZABLE transactions that each read what the other writes: PostgreSQL
    aborts one with SQLSTATE 40001, and that error is one the retry helper retries."""
    db = Database(database_url, isolation="SERIALIZABLE")
    both_read = asyncio.Barrier(2)
    errors: list[BaseException] = []

    async def read_then_write(kind: str) -> None:
        try:
            async with db.transaction() as connection:
                await connection.execute(
                    text("SELECT COUNT(*) FROM ledger_accounts WHERE kind = 'issuance'")
                )
                await both_read.wait()
                await connection.execute(
                    text(
                        "INSERT INTO ledger_accounts (kind, currency, tracked, balance, created_at)"
                        " VALUES (:kind, 'USD', true, 0, now())"
                    ),
                    {"kind": kind},
                )
        except DBAPIError as error:
            errors.append(error)

    async def both() -> Any:
        return await asyncio.gather(read_then_write("issuance"), read_then_write("issuance"))

    try:
        await asyncio.wait_for(both(), timeout=30)
    finally:
        await db.dispose()
    assert len(errors) == 1, errors
    assert is_retryable(errors[0])


class FailOnce:
    """Make the next statement that contains `words` (in upper case) fail as a
    serialization failure would, once: the transaction it was in is then retried, or the
    failure surfaces. (Contains, not starts with: on PostgreSQL a journal transaction is
    written by a statement that starts with WITH.)"""

    def __init__(self, words: str) -> None:
        self.words = words
        self.armed = False
        self.failed = 0

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if self.armed and self.words in statement.upper():
            self.armed = False
            self.failed += 1
            raise driver_error("40001")


async def test_card_issuance_and_activation_go_through_the_retry_place(
    client: httpx.AsyncClient, services: Services, no_backoff: None
) -> None:
    """Given a serialization failure in the middle of issuing cards, and again in the
    middle of activating one, each request still succeeds once (its transaction was run
    again), with no card issued twice, instead of failing with a 500."""
    admin = await api_key(services)
    fail = FailOnce("INSERT INTO JOURNAL_TRANSACTIONS")
    event.listen(services.db.engine.sync_engine, "before_cursor_execute", fail)
    try:
        fail.armed = True
        issued = await client.post(
            "/v1/cards",
            json={"amount": 2000, "region": "US", "kind": "digital", "count": 3},
            headers=admin,
        )
        assert issued.status_code == 201, issued.text
        assert len(issued.json()["data"]) == 3
        [physical] = await issue(client, admin, kind="physical")
        fail.armed = True
        activated = await client.post(
            "/v1/cards/activate", json={"serial": physical["serial"]}, headers=admin
        )
        assert activated.status_code == 200, activated.text
        assert activated.json()["state"] == "active"
    finally:
        event.remove(services.db.engine.sync_engine, "before_cursor_execute", fail)
    assert fail.failed == 2
    async with services.db.transaction(write=False) as connection:
        count = (await connection.execute(select(func.count()).select_from(cards))).scalar_one()
    assert count == 4
    assert (await verify(services.db)).problems == []


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_server_with_no_room_for_another_client_gets_a_503_not_a_500(
    database_url: str, postgres_url: str, no_backoff: None
) -> None:
    """PostgreSQL refusing a connection (too many clients: here a role allowed none)
    comes before any statement, so it is retried, and when it lasts the answer is 503
    service_unavailable — never an internal error."""
    import uuid

    import asyncpg

    role = f"gc_full_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
        url = make_url(database_url).set(username=role, password=None)
        db = Database(url.render_as_string(hide_password=False))
        try:
            with pytest.raises(GiftcardError) as busy:
                await db.run(lambda connection: connection.execute(text("SELECT 1")))
        finally:
            await db.dispose()
        assert busy.value.code is ErrorCode.SERVICE_UNAVAILABLE
        assert is_retryable(busy.value.__cause__)  # type: ignore[arg-type]
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def _terminate_every_other_backend(postgres_url: str, database_url: str) -> int:
    """What a database restart does to the connections a pool keeps: end them all."""
    admin = await asyncpg.connect(postgres_url)
    try:
        ended: list[Any] = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            make_url(database_url).database,
        )
    finally:
        await admin.close()
    return len(ended)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_transaction_whose_pooled_connection_was_lost_runs_again_on_a_new_one(
    services: Services,
    database_url: str,
    postgres_url: str,
    no_backoff: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given pooled connections that the server ended (as a restart of PostgreSQL does),
    then a transaction finds its connection lost before its first statement, runs again on
    a new connection and makes its change once."""
    db = services.db

    async def hold(connection: AsyncConnection) -> None:
        await connection.execute(text("SELECT pg_sleep(0.05)"))

    await asyncio.gather(*(db.run(hold) for _ in range(4)))  # the pool keeps four
    # As if the ends of the connections had not reached the client yet, so that the pool
    # cannot tell them closed at checkout.
    monkeypatch.setattr(engine_module, "seen_closed", lambda _connection: False)
    assert await _terminate_every_other_backend(postgres_url, database_url) >= 1
    calls = 0

    async def change(connection: AsyncConnection) -> None:
        nonlocal calls
        calls += 1
        await connection.execute(text("UPDATE ledger_accounts SET currency = currency WHERE false"))

    await db.run(change)
    assert calls == 2
    async with db.transaction(write=False) as connection:
        assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_pooled_connections_the_server_closed_are_replaced_before_any_use(
    services: Services, database_url: str, postgres_url: str
) -> None:
    """Given pooled connections that the server ended, once their ends have reached the
    client, a plain read transaction (as authentication opens, outside `Database.run`)
    gets a new connection rather than an error."""
    db = services.db

    async def hold(connection: AsyncConnection) -> None:
        await connection.execute(text("SELECT pg_sleep(0.05)"))

    await asyncio.gather(*(db.run(hold) for _ in range(4)))
    assert await _terminate_every_other_backend(postgres_url, database_url) >= 4
    await asyncio.sleep(0.2)
    for _ in range(4):
        async with db.transaction(write=False) as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_connection_lost_after_a_statement_is_not_run_again(
    services: Services, database_url: str, postgres_url: str, no_backoff: None
) -> None:
    """A connection lost after the transaction's first statement may have done work
    whose fate is unknown: that transaction is not run again, and the caller is told
    the service is unavailable (503), whose advice is to retry with the same key."""
    calls = 0

    async def work(connection: AsyncConnection) -> None:
        nonlocal calls
        calls += 1
        await connection.execute(text("SELECT 1"))
        await _terminate_every_other_backend(postgres_url, database_url)
        await connection.execute(text("SELECT 2"))

    with pytest.raises(GiftcardError) as lost:
        await services.db.run(work)
    assert lost.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert isinstance(lost.value.__cause__, DBAPIError)
    assert lost.value.__cause__.connection_invalidated
    assert calls == 1


async def test_a_database_that_does_not_answer_gets_a_503_not_a_500() -> None:
    """With PostgreSQL unreachable (nothing listens where it should be, as while it
    restarts), an API request is answered 503 service_unavailable with Retry-After, and a
    page 503 with words for people: never an internal error."""
    from giftcard.api.app import create_app
    from giftcard.config import Settings
    from giftcard.services import Services
    from tests.conftest import TEST_SECRET_KEY
    from tests.services import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    svc = Services.build(Settings(database_url=url, secret_key=TEST_SECRET_KEY))
    try:
        transport = httpx.ASGITransport(app=create_app(services=svc), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            api = await http.get(
                "/v1/me/balance", headers={"Authorization": "Bearer gcs_" + "a" * 43}
            )
            http.cookies.set("giftcard_session", "gcs_" + "b" * 43)
            page = await http.get("/account/gift-cards", headers={"Accept": "text/html"})
    finally:
        await svc.close()
    assert api.status_code == 503, api.text
    assert api.json()["code"] == "service_unavailable"
    assert api.headers["retry-after"] == "1"
    assert page.status_code == 503, page.text
    assert "could not reach our database" in page.text
