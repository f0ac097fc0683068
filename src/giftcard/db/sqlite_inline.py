"""SQLite for the async engine, run on the event loop's own thread.

SQLAlchemy's asyncio SQLite dialect drives aiosqlite, which hands every call (open a
cursor, execute, fetch, close the cursor) to a thread of its own connection and wakes
the event loop with the answer: four hand-overs a statement, each costing more CPU than
SQLite takes to run the statement itself (on this project's benchmark machine about
0.1 ms a hand-over against a few microseconds a statement), and a redemption makes some
seventy of them. SQLite runs in this process: a statement is a function call, not a
round trip to a server.

This module gives the dialect a connection with aiosqlite's interface whose calls run
at once on the calling thread. Only waiting is done differently: SQLite's busy handler
would sleep inside the call, stopping the event loop while another process holds the
write lock, so the connection's own busy timeout is zero and a statement that finds the
database locked is tried again after a short `asyncio.sleep` (1 ms, then 2 ms), until the
busy timeout the engine was given has passed. Each statement still runs to its end on
the event loop: what the service asks of its embedded database is short (the heavy
reads and writes of a large store belong on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# SQLite's primary result codes for a lock another connection holds.
_WAITABLE = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
# Pauses between tries while another process writes: 1 ms, then 2 ms at most. Only one
# writer of each process waits here (the others queue on the engine's lock), so a try
# every 2 ms costs next to nothing, and the lock is taken soon after it is free; with
# pauses growing to 25 ms the other process's writers took it back-to-back meanwhile.
_PAUSE_FIRST_S = 0.001
_PAUSE_MAX_S = 0.002


def _waitable(error: sqlite3.OperationalError) -> bool:
    code = error.sqlite_errorcode
    # BUSY_SNAPSHOT (a read transaction that may no longer write) is not cured by waiting.
    return code & 0xFF in _WAITABLE and code != sqlite3.SQLITE_BUSY_SNAPSHOT


class Connection:
    """What SQLAlchemy's aiosqlite adapter uses of an aiosqlite connection."""

    def __init__(self, connection: sqlite3.Connection, busy_timeout_s: float) -> None:
        self._conn: sqlite3.Connection | None = connection
        self.busy_timeout_s = busy_timeout_s
        # The adapter sets the isolation level by putting (future, function) on
        # aiosqlite's request queue; here the function runs at once.
        self._tx = _RunNow()

    @property
    def _connection(self) -> sqlite3.Connection | None:
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError("Connection closed")
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._open().isolation_level

    async def _waiting(self, call: Callable[[], T]) -> T:
        """`call`, again after a pause for as long as the database is locked by another
        connection, up to the busy timeout."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        pause_s = _PAUSE_FIRST_S
        while True:
            try:
                return call()
            except sqlite3.OperationalError as error:
                if not _waitable(error):
                    raise
                now = loop.time()
                if deadline is None:
                    deadline = now + self.busy_timeout_s
                if now >= deadline:
                    raise
                await asyncio.sleep(min(pause_s, deadline - now))
                pause_s = min(pause_s * 2, _PAUSE_MAX_S)

    def cursor(self) -> _CursorOpening:
        return _CursorOpening(self)

    def _new_cursor(self) -> Cursor:
        return Cursor(self, self._open().cursor())

    async def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        return await self._new_cursor().execute(sql, parameters)

    async def commit(self) -> None:
        # Inline too, fsync and all: handing the commit alone to a thread, so that the
        # event loop could go on during the WAL's fsync, was measured slower (one writer
        # at a time holds the write lock through it anyway).
        await self._waiting(self._open().commit)

    async def rollback(self) -> None:
        self._open().rollback()

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Close at once: what the adapter calls to terminate a connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._open().create_function(*args, **kwargs)


class _RunNow:
    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as error:  # handed to the caller through its future
            if future is None:
                raise
            future.set_exception(error)
        else:
            if future is not None:
                future.set_result(result)


class _CursorOpening:
    """`connection.cursor()`: awaitable, and an async context, like aiosqlite's."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def __await__(self) -> Any:
        return self.__aenter__().__await__()

    async def __aenter__(self) -> Cursor:
        return self._connection._new_cursor()

    async def __aexit__(self, *_: object) -> None:
        return None


class Cursor:
    """What the adapter uses of an aiosqlite cursor."""

    def __init__(self, connection: Connection, cursor: sqlite3.Cursor) -> None:
        self._connection = connection
        self._cursor = cursor

    async def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        arguments = () if parameters is None else parameters
        await self._connection._waiting(lambda: self._cursor.execute(sql, arguments))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        rows = list(parameters)
        await self._connection._waiting(lambda: self._cursor.executemany(sql, rows))
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        if size is None:
            return self._cursor.fetchmany()
        return self._cursor.fetchmany(size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def description(self) -> Sequence[Any] | None:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


def connector(path: str, *, busy_timeout_s: float) -> Callable[[], Any]:
    """The engine's `async_creator`: a new connection to the database file at `path`,
    whose own busy timeout is zero (the waiting is done by `Connection`)."""

    async def connect() -> Connection:
        raw = sqlite3.connect(path, timeout=0, check_same_thread=False)
        return Connection(raw, busy_timeout_s)

    return connect
