"""The engine and the unit of work.

Every use case runs inside :meth:`Database.transaction` (or :meth:`Database.run`, which
adds retries): one database transaction, committed once, rolled back on any exception.
On SQLite, the units of work that :meth:`Database.run` has waiting to write share one
transaction, each in a savepoint (group commit): one lock and one wait for the disk for
all of them.

SQLite: WAL with ``synchronous=FULL`` (a commit is on disk before it returns, so an
acknowledged write survives a power cut, not only a crash of the process; NORMAL would
lose the last commits before a checkpoint), foreign keys on, and write transactions
opened with ``BEGIN IMMEDIATE`` so
that a writer takes the write lock at its start instead of failing half-way when it
upgrades from a read lock (in WAL mode such an upgrade fails at once, without waiting, if
another writer committed since the transaction's first read). Writers of other processes
wait for the lock up to the busy timeout; one that waited longer ("database is locked")
is retried here like any other transaction that did nothing. PostgreSQL: asyncpg, READ
COMMITTED by default or SERIALIZABLE when configured; either way, serialization failures
and deadlocks are retried here.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from giftcard.db import batches, direct, riders, sqlite_inline
from giftcard.errors import ErrorCode, GiftcardError

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a SQLite writer waits for another process's write lock before the attempt
# fails with "database is locked" and is retried (with back-off, up to RETRY_ATTEMPTS_MAX).
SQLITE_BUSY_TIMEOUT_S = 5.0
# Sized for a hot row at SERIALIZABLE: when 50 payments race for one customer's balance,
# each round of retries that still collide lets only one through (the others queued on
# the row's lock fail when it commits), until the growing jitter spreads them out. With
# 8 attempts and a 0.25 s cap most of them ran out and failed; these leave a wide margin
# (the last ones got through at attempt 9) while still bounding the wait to about 10 s.
RETRY_ATTEMPTS_MAX = 16
RETRY_BACKOFF_BASE_S = 0.005
RETRY_BACKOFF_MAX_S = 1.0
# PostgreSQL's serialization_failure and deadlock_detected: the transaction did nothing
# and may simply be run again. So may one refused its connection because the server has
# all the clients it takes (too_many_connections) or is starting or stopping
# (cannot_connect_now): these come before the first statement. (A connection lost
# mid-transaction is not among them: whether its commit happened is unknown.)
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "53300", "57P03"})
# SQLite: at most this many writers of one process go in one transaction (see
# Database._commit_sqlite_batch); more would make the first of them wait for the last.
SQLITE_BATCH_MAX = 32
# Where a transaction's connection counts the statements it has finished: a connection
# found lost before the first of them (one the pool kept across a database restart) did
# nothing, and the transaction is run again on a new one.
_STATEMENTS = "giftcard_statements"
# An execution option: False on a SQLite connection whose statements each commit by
# themselves (see Database.reading), so that no BEGIN is written for it.
_BEGINS = "giftcard_begins"
# How long a connection taken from the pool may be kept between calls (see
# Database._pooled) before it goes back, so that the pool still sees each connection now
# and then and recycles those past their age (pool_recycle).
KEPT_S_MAX = 60.0


def async_url(database_url: str) -> str:
    """Map the user-facing URL onto the async driver for its database."""
    if database_url.startswith("sqlite+aiosqlite"):
        return database_url
    if database_url.startswith("sqlite"):
        return "sqlite+aiosqlite" + database_url[len("sqlite") :]
    for prefix in ("postgresql+asyncpg", "postgresql", "postgres"):
        if database_url.startswith(prefix + "://"):
            return "postgresql+asyncpg://" + database_url[len(prefix) + 3 :]
    raise ValueError("unsupported database URL")


def _sqlstate(error: DBAPIError) -> str | None:
    original: Any = error.orig
    for candidate in (original, getattr(original, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if code:
            return str(code)
    return None


def is_sqlite_busy(error: BaseException) -> bool:
    """SQLite's SQLITE_BUSY: the write lock was not free within the busy timeout, or a
    read transaction could not become a write one. The statement did nothing."""
    return isinstance(error, DBAPIError) and "database is locked" in str(error.orig)


def is_retryable(error: BaseException) -> bool:
    if not isinstance(error, DBAPIError):
        return False
    return _sqlstate(error) in RETRYABLE_SQLSTATES or is_sqlite_busy(error)


# Connection exceptions, and a server shutting down, crashed or not yet accepting
# connections (a restart in progress).
_UNREACHABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def is_database_unreachable(error: BaseException) -> bool:
    """Whether `error` says the database could not be reached or the connection to it
    was lost, rather than anything about the request (also when it is the
    :func:`unavailable` that such an error became)."""
    if isinstance(error, GiftcardError) and error.__cause__ is not None:
        return is_database_unreachable(error.__cause__)
    if isinstance(error, ConnectionError):
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    state = _sqlstate(error)
    return state is not None and (state.startswith("08") or state in _UNREACHABLE_SQLSTATES)


DATABASE_UNREACHABLE_DETAIL = (
    "The database did not answer (it may be restarting), so this request may not have "
    "been carried out. Please retry in a moment, with the same Idempotency-Key: a retry "
    "with it is never applied twice."
)


def unavailable() -> GiftcardError:
    """What a request that could not reach the database, or lost it, is answered."""
    return GiftcardError(ErrorCode.SERVICE_UNAVAILABLE, DATABASE_UNREACHABLE_DETAIL)


@contextmanager
def _unreachable_is_unavailable() -> Iterator[None]:
    try:
        yield
    except Exception as error:
        if is_database_unreachable(error):
            raise unavailable() from error
        raise


def is_unique_violation(error: BaseException) -> bool:
    if not isinstance(error, DBAPIError):
        return False
    if _sqlstate(error) == "23505":
        return True
    return "UNIQUE constraint failed" in str(error.orig)


class Database:
    """One engine, its dialect's quirks, and the unit of work."""

    def __init__(
        self,
        database_url: str,
        *,
        pool_size: int = 20,
        isolation: str | None = None,
        sqlite_busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
    ):
        self.url = async_url(database_url)
        self.is_sqlite = self.url.startswith("sqlite")
        # PostgreSQL's own default, READ COMMITTED, unless another level was asked for.
        self.reads_committed = not self.is_sqlite and isolation in (None, "READ COMMITTED")
        self.sqlite_busy_timeout_s = sqlite_busy_timeout_s
        self.engine: AsyncEngine = self._create_engine(pool_size, isolation)
        # On PostgreSQL, the connections for work without BEGIN come from the same pool
        # through an engine that sets AUTOCOMMIT as it hands one out (SQLAlchemy's way
        # of keeping two isolation levels on one engine): setting it on each connection
        # afterwards was one more call through SQLAlchemy's greenlet, 30 us of CPU a
        # checkout (73 instead of 91-93 us for the checkout and its return).
        self._autocommitting: AsyncEngine = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        # SQLite has one writer at a time. Writers of this process queue here, in order
        # (units of work in batches, see _commit_sqlite_batch), rather than in SQLite's
        # busy handler, which polls with growing sleeps and lets an unlucky writer wait
        # seconds behind later ones. Other processes still meet at BEGIN IMMEDIATE.
        self._sqlite_writer = asyncio.Lock()
        # Units of work waiting to write on SQLite, committed in batches.
        self._sqlite_batches: batches.Batches[Callable[[AsyncConnection], Awaitable[Any]], Any] = (
            batches.Batches(self._commit_sqlite_batch, batch_max=SQLITE_BATCH_MAX)
        )
        # The batches of giftcard.db.batches.PerDatabase on this database, by their owner.
        self.batches: dict[object, Any] = {}
        # Connections taken from the pool and kept between calls, by whether
        # they commit each statement by itself, each with the moment it was taken; the
        # most recently used last (see _pooled).
        self._kept: dict[bool, list[tuple[AsyncConnection, float]]] = {True: [], False: []}
        self._kept_max = max(1, pool_size // 4)

    def _create_engine(self, pool_size: int, isolation: str | None) -> AsyncEngine:
        # At most `pool_size` connections, each opened when load first needs it and kept:
        # a connection opened for a burst and closed after it (the pool's "overflow") is
        # opened again by the next, and a new connection prepares every statement anew;
        # under a steady load that churn cost more server CPU per request than the rest
        # of the redemption's statements together with their preparing.
        if self.is_sqlite:
            path = make_url(self.url).database
            if not path or path == ":memory:":
                raise ValueError("a SQLite database URL must name a file")
            engine = create_async_engine(
                self.url,
                async_creator=sqlite_inline.connector(
                    path, busy_timeout_s=self.sqlite_busy_timeout_s
                ),
                hide_parameters=True,
                pool_size=pool_size,
                max_overflow=0,
            )
            _configure_sqlite(engine)
            return engine
        options: dict[str, Any] = {
            "pool_size": pool_size,
            "max_overflow": 0,
            "pool_pre_ping": False,
            "pool_recycle": 1800,
            # Error messages must not carry bound values into logs.
            "hide_parameters": True,
        }
        if isolation:
            options["isolation_level"] = isolation
        engine = create_async_engine(self.url, **options)
        _count_statements(engine)
        _discard_closed_connections(engine)
        return engine

    async def dispose(self) -> None:
        await self._give_back_every_kept()
        await self.engine.dispose()

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncConnection]:
        """One transaction: commits when the block ends, rolls back if it raises. A
        database that cannot be reached, or a connection lost, is
        :func:`unavailable`."""
        with _unreachable_is_unavailable():
            async with self._transaction(write=write) as connection:
                yield connection

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        if self.is_sqlite and write:
            async with self._sqlite_writer, self._connection(write=True) as connection:
                yield connection
        else:
            async with self._connection(write=write) as connection:
                yield connection

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads that need no snapshot shared between them (each
        statement sees what is committed when it runs), without BEGIN and COMMIT: on
        PostgreSQL they would be two more round trips for what is often one statement,
        on SQLite two more statements, each costing more CPU than a read by its key (in
        WAL mode a statement outside a transaction reads a snapshot of its own)."""
        with _unreachable_is_unavailable():
            async with self._autocommitted() as connection:
                yield connection

    async def run_alone(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work`, whose every statement stands alone (one that writes commits by
        itself, and none depends on another's being done too): on PostgreSQL without
        BEGIN and COMMIT; on SQLite as :meth:`run` does."""
        if self.is_sqlite:
            return await self.run(work)
        with _unreachable_is_unavailable():
            async with self._autocommitted() as connection:
                return await work(connection)

    @asynccontextmanager
    async def _pooled(self, *, autocommit: bool) -> AsyncIterator[AsyncConnection]:
        """A connection for one call, with BEGIN or without (`autocommit`).

        A connection that a call is done with is kept by this process for the next call
        of its kind (up to a quarter of the pool for each kind, each for at most
        KEPT_S_MAX), instead of going back to the pool at once: the pool's checkout and
        return, and the SQLAlchemy connection made at each, cost more of the process's
        CPU than a statement's round trip. Measured on PostgreSQL: a call of one
        statement without BEGIN 189 us through the pool, 99-104 us on a kept
        connection; 359 and 284-290 us with BEGIN and COMMIT. On SQLite, with 8
        redemptions in flight through the app, each took 1.1 checkouts; with the
        connections kept, the process ran 8.7 % fewer instructions. A call that fails
        gives its connection back, and the pool rolls it back or, if it was lost,
        discards it; one that lost its connection gives back every kept one too (the
        server may have ended them all), as does a kept one found ended by the server
        when next taken."""
        engine = self._autocommitting if autocommit else self.engine
        taken = await self._take_kept(autocommit)
        if taken is None:
            pool = self.engine.pool
            if pool.checkedout() >= pool.size():  # type: ignore[attr-defined]
                # Every connection is out: those kept for the other kind go back first,
                # so that none waits for what nobody is using.
                await self._give_back_kept(not autocommit)
            taken = (await engine.connect().start(), time.monotonic())
        connection, taken_at = taken
        try:
            yield connection
        except BaseException as error:
            await _give_back(connection)
            if is_database_unreachable(error):
                # The server may have ended every connection (a restart): the kept ones
                # go back too, and the pool replaces those older than the loss, as it
                # does for the connections it holds itself.
                await self._give_back_every_kept()
            raise
        kept = self._kept[autocommit]
        if len(kept) < self._kept_max and time.monotonic() - taken_at < KEPT_S_MAX:
            kept.append((connection, taken_at))
        else:
            await _give_back(connection)

    async def _take_kept(self, autocommit: bool) -> tuple[AsyncConnection, float] | None:
        kept = self._kept[autocommit]
        while kept:
            connection, taken_at = kept.pop()
            if time.monotonic() - taken_at < KEPT_S_MAX and not _lost(connection, self.is_sqlite):
                return connection, taken_at
            await _give_back(connection)
        return None

    async def _give_back_every_kept(self) -> None:
        for autocommit in (True, False):
            await self._give_back_kept(autocommit)

    async def _give_back_kept(self, autocommit: bool) -> None:
        kept = self._kept[autocommit]
        while kept:
            connection, _ = kept.pop()
            await _give_back(connection)

    @asynccontextmanager
    async def _autocommitted(self) -> AsyncIterator[AsyncConnection]:
        async with self._pooled(autocommit=True) as connection:
            if self.is_sqlite:
                # The driver commits each statement by itself already (see
                # _configure_sqlite): only the BEGIN this engine writes is left out.
                await connection.execution_options(**{_BEGINS: False})
            riders.discard(connection)
            yield connection
            await riders.flush(connection)

    @asynccontextmanager
    async def _connection(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        async with self._pooled(autocommit=False) as connection:
            if self.is_sqlite:
                await connection.execution_options(giftcard_write=write)
            async with connection.begin():
                riders.discard(connection)
                yield connection
                await riders.flush(connection)

    async def run(
        self,
        work: Callable[[AsyncConnection], Awaitable[T]],
        *,
        write: bool = True,
    ) -> T:
        """Run `work` in one transaction, again if the database says it may (bounded,
        with jittered back-off). `work` must not have effects outside the database."""
        with _unreachable_is_unavailable():
            return await self._run(work, write=write)

    async def _run(self, work: Callable[[AsyncConnection], Awaitable[T]], *, write: bool) -> T:
        for attempt in range(1, RETRY_ATTEMPTS_MAX + 1):
            statements = [0]
            try:
                if self.is_sqlite and write:
                    return cast(T, await self._sqlite_batches.submit(work))
                async with self._transaction(write=write) as connection:
                    connection.info[_STATEMENTS] = statements
                    return await work(connection)
            except DBAPIError as error:
                lost_unused = error.connection_invalidated and statements[0] == 0
                if not (is_retryable(error) or lost_unused):
                    raise
                if attempt == RETRY_ATTEMPTS_MAX:
                    raise GiftcardError(
                        ErrorCode.SERVICE_UNAVAILABLE,
                        "The service is too busy to finish this now; nothing was done. "
                        "Please retry.",
                    ) from error
                delay_s = min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_BASE_S * 2**attempt)
                log.info(
                    "retrying transaction",
                    extra={
                        "attempt": attempt,
                        "sqlstate": "connection_lost"
                        if lost_unused
                        else "sqlite_busy"
                        if is_sqlite_busy(error)
                        else _sqlstate(error),
                    },
                )
                await asyncio.sleep(random.uniform(0, delay_s))
        raise AssertionError("unreachable")

    async def _commit_sqlite_batch(
        self, batch: Sequence[Callable[[AsyncConnection], Awaitable[Any]]]
    ) -> list[Any]:
        """Group commit. SQLite lets one writer in at a time, and each commit waits for
        the disk (``synchronous=FULL``). The units of work that came while the last
        transaction ran go in the next one together (giftcard.db.batches), up to
        SQLITE_BATCH_MAX, each in a savepoint of its own: one that fails is rolled back
        to its savepoint and fails alone, the others go on. Each is answered once the
        transaction has committed, so nothing is acknowledged before it is on disk; if
        BEGIN or COMMIT fails, all of them fail and none of them happened."""
        async with self._sqlite_writer, self._connection(write=True) as connection:
            if len(batch) == 1:
                # Alone: no savepoint; if it fails, its transaction is rolled back.
                return [await batch[0](connection)]
            return [await _in_savepoint(connection, work) for work in batch]


def _lost(connection: AsyncConnection, sqlite: bool) -> bool:
    """Whether a kept connection can no longer be used: invalidated, or on PostgreSQL
    ended by the server (as the pool checks at checkout: see
    _discard_closed_connections)."""
    if connection.invalidated:
        return True
    if sqlite:
        return False
    return seen_closed(connection.sync_connection.connection.driver_connection)  # type: ignore[union-attr]


async def _give_back(connection: AsyncConnection) -> None:
    """Back to the pool, which rolls back whatever the connection has open."""
    try:
        await connection.close()
    except Exception:
        log.warning("could not give a connection back to the pool", exc_info=True)


# A unit of work's savepoint in a batch on SQLite, its statements handed straight to the
# driver (see giftcard.db.direct): SQLAlchemy's own savepoint costs more than the
# statements of the unit it guards.
_SAVEPOINT = text("SAVEPOINT giftcard_unit")
_ROLLBACK_TO_SAVEPOINT = text("ROLLBACK TO SAVEPOINT giftcard_unit")
_RELEASE_SAVEPOINT = text("RELEASE SAVEPOINT giftcard_unit")


async def _in_savepoint(
    connection: AsyncConnection, work: Callable[[AsyncConnection], Awaitable[T]]
) -> T | batches.Failed:
    """`work`'s result, or how it failed, its writes then rolled back to the savepoint
    it ran in (the writes queued to ride along are sent before the savepoint ends)."""
    await direct.execute(connection, _SAVEPOINT)
    try:
        riders.discard(connection)
        result = await work(connection)
        await riders.flush(connection)
    except Exception as error:
        await direct.execute(connection, _ROLLBACK_TO_SAVEPOINT)
        await direct.execute(connection, _RELEASE_SAVEPOINT)
        return batches.Failed(error)
    await direct.execute(connection, _RELEASE_SAVEPOINT)
    return result


def _count_statements(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def _finished(connection: Connection, *_args: Any) -> None:
        counter = connection.info.get(_STATEMENTS)
        if counter is not None:
            counter[0] += 1


def _discard_closed_connections(engine: AsyncEngine) -> None:
    """A pooled connection that the server has closed (a restart of PostgreSQL ends them
    all) is known to be closed as soon as the event loop has read the end of its socket:
    the pool replaces it at checkout, at no cost of a round trip, instead of handing it
    to a transaction that would fail. One whose end has not arrived yet is still caught
    by :meth:`Database.run`, which runs a transaction again when its connection is lost
    before its first statement."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if seen_closed(dbapi_connection.driver_connection):
            raise DisconnectionError("the server closed this pooled connection")


def seen_closed(driver_connection: Any) -> bool:
    """Whether the client has seen the server end this asyncpg connection."""
    return bool(driver_connection.is_closed())


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to write.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if not options.get(_BEGINS, True):
            return
        write = options.get("giftcard_write", True)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
