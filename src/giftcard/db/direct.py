"""The hot paths' statements, handed straight to the driver.

A statement of a hot path is built once with SQLAlchemy Core (see giftcard.ledger), and
SQLAlchemy's async execution around it costs more than the driver's own work: on SQLite,
where a statement is a function call, a cached UPDATE of one balance takes the library
about 9 µs on this project's benchmark machine and SQLAlchemy some 125 µs more; on
PostgreSQL, asyncpg's part of a round trip is about 60 µs of the service's CPU and
SQLAlchemy's (a greenlet for the call, an execution context, the adapter's cursor, a
result object) about 150 µs more. :func:`execute` runs such a statement as SQLAlchemy
would, from SQL compiled once per statement and set of parameter names, its values
passed through the columns' own types (a timestamp is stored as SQLAlchemy stores it)
and its rows read back through them, but on the pooled connection's driver connection
itself. What SQLAlchemy does around a statement and the service relies on is kept: an
error is raised as the same `DBAPIError` (so that a unique violation, a lost connection
or a locked database is told apart as before, with the values kept out of its message),
and the engine's `before_cursor_execute` and `after_cursor_execute` listeners are
called.

On SQLite a statement that finds the database locked by another process is tried again
as giftcard.db.sqlite_inline does. On PostgreSQL the statement goes through SQLAlchemy's
asyncpg adapter of the connection, as its own cursor does: under its lock (one
statement at a time on a connection), in its transaction (begun by the first statement,
as SQLAlchemy begins it, so that SQLAlchemy commits or rolls back what it did), prepared
once per connection in the adapter's cache of prepared statements, its errors translated
by the adapter; a lost connection is invalidated, as SQLAlchemy does, so that the pool
does not hand it out again. Any other driver gets the connection's own `execute`.
"""

from __future__ import annotations

import functools
import sqlite3
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler

# Where a pooled connection keeps its driver connection, or on PostgreSQL SQLAlchemy's
# adapter of it (found once per connection).
_DRIVER = "giftcard_sqlite_driver"
_ADAPTER = "giftcard_asyncpg_adapter"


class Rows(Protocol):
    """What the callers of :func:`execute` read of its answer, whichever way it ran."""

    def __iter__(self) -> Iterator[Any]: ...

    def all(self) -> Sequence[Any]: ...

    def one(self) -> Any: ...

    def one_or_none(self) -> Any | None: ...

    def scalar_one(self) -> Any: ...

    def scalar_one_or_none(self) -> Any | None: ...


async def execute(
    connection: AsyncConnection,
    statement: Executable,
    parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
) -> Rows:
    """Run `statement` with `parameters` (a list of them: once for each, without rows),
    as `connection.execute` would."""
    dialect = connection.dialect
    if dialect.name != "sqlite" and dialect.driver != "asyncpg":
        return await connection.execute(statement, parameters)
    many = isinstance(parameters, Sequence)
    values: Sequence[Mapping[str, Any]] = (
        parameters if isinstance(parameters, Sequence) else [parameters or {}]
    )
    if not values:
        return _Answer([])
    prepared = _prepare(connection, statement, tuple(sorted(values[0])))
    if many:
        sql, arguments = prepared.sql, [prepared.arguments(one) for one in values]
    else:
        sql, one = prepared.expanded(values[0])
        arguments = [one]
    call = _Call(prepared, sql, arguments, many)
    if dialect.name == "sqlite":
        return await _on_sqlite(connection, call)
    return await _on_asyncpg(connection, call)


@dataclass(frozen=True)
class _Call:
    """A statement to run now: its SQL with its arguments, once or for each of many."""

    prepared: _Prepared
    sql: str
    arguments: list[tuple[Any, ...]]
    many: bool

    @property
    def sent(self) -> Any:
        """The arguments as the engine's listeners are given them."""
        return self.arguments if self.many else self.arguments[0]


async def _kept(connection: AsyncConnection, name: str, pick: Callable[[Any], Any]) -> Any:
    """What `pick` takes from the pooled connection, found once per connection."""
    found = connection.info.get(name)
    if found is None:
        found = connection.info[name] = pick(await connection.get_raw_connection())
    return found


def _sync(connection: AsyncConnection) -> Connection:
    sync = connection.sync_connection
    assert sync is not None
    return sync


async def _on_sqlite(connection: AsyncConnection, call: _Call) -> Rows:
    # giftcard.db.sqlite_inline's connection, through which statements wait their turn.
    driver = await _kept(connection, _DRIVER, lambda raw: raw.driver_connection)
    sync = _sync(connection)
    cursor = driver._open().cursor()
    try:
        _before(sync, cursor, call)
        if call.many:
            await driver._waiting(lambda: cursor.executemany(call.sql, call.arguments))
        else:
            await driver._waiting(lambda: cursor.execute(call.sql, call.arguments[0]))
        rows = call.prepared.rows(cursor)
        _after(sync, cursor, call)
    except sqlite3.Error as error:
        raise _wrapped(connection, call, error, sqlite3.Error) from error
    finally:
        cursor.close()
    return _Answer(rows)


async def _on_asyncpg(connection: AsyncConnection, call: _Call) -> Rows:
    # SQLAlchemy's adapter of the asyncpg connection, which holds its transaction.
    adapter = await _kept(connection, _ADAPTER, lambda raw: raw.dbapi_connection)
    sync = _sync(connection)
    _before(sync, None, call)
    dialect: Any = connection.dialect
    # What SQLAlchemy's cursor for this connection does around a statement.
    try:
        async with adapter._execute_mutex:
            if adapter._transaction is None:
                await adapter._start_transaction()
            statement, attributes = await adapter._prepare(
                call.sql, dialect._invalidate_schema_cache_asof
            )
            if call.many:
                await statement.executemany(call.arguments)
                records = []
            else:
                records = await statement.fetch(*call.arguments[0])
    except Exception as error:
        raise await _asyncpg_failure(connection, adapter, call, error) from error
    rows = call.prepared.records(records, attributes)
    _after(sync, None, call)
    return _Answer(rows)


async def _asyncpg_failure(
    connection: AsyncConnection, adapter: Any, call: _Call, error: Exception
) -> Exception:
    """What SQLAlchemy raises for `error`: the adapter's translation of it (a DBAPI error
    of its kind, a unique violation's IntegrityError among them) wrapped in SQLAlchemy's
    `DBAPIError`, the values hidden. A connection found lost is invalidated first."""
    dialect: Any = connection.dialect
    try:
        adapter._handle_exception(error)
    except Exception as raised:
        translated = raised
    else:  # pragma: no cover - the adapter always raises
        translated = error
    dbapi = dialect.loaded_dbapi
    if not isinstance(translated, dbapi.Error):
        return translated
    if isinstance(translated, (dbapi.InvalidCachedStatementError, dbapi.InternalServerError)):
        # A table's definition changed under a prepared statement: prepare anew.
        dialect._invalidate_schema_cache()
    lost = bool(dialect.is_disconnect(translated, adapter, None))
    if lost:
        await connection.invalidate(translated)
    return _wrapped(connection, call, translated, dbapi.Error, lost=lost)


def _wrapped(
    connection: AsyncConnection,
    call: _Call,
    error: Exception,
    driver_error: type[Exception],
    *,
    lost: bool = False,
) -> Exception:
    """`error` as SQLAlchemy raises a driver's error, the statement's values hidden."""
    wrapped: Exception = exc.DBAPIError.instance(
        call.sql,
        call.sent,
        error,
        driver_error,
        hide_parameters=True,
        dialect=connection.dialect,
        ismulti=call.many,
        connection_invalidated=lost,
    )
    return wrapped


def _before(sync: Connection, cursor: Any, call: _Call) -> None:
    if sync.dispatch.before_cursor_execute:
        sync.dispatch.before_cursor_execute(sync, cursor, call.sql, call.sent, None, call.many)


def _after(sync: Connection, cursor: Any, call: _Call) -> None:
    if sync.dispatch.after_cursor_execute:
        sync.dispatch.after_cursor_execute(sync, cursor, call.sql, call.sent, None, call.many)


@dataclass
class _Prepared:
    """A statement compiled for its database, with what turns values into its arguments and
    its rows into values."""

    sql: str
    compiled: SQLCompiler
    # For each positional argument: its parameter's name, and its type's conversion.
    names: tuple[str, ...]
    converters: tuple[Callable[[Any], Any] | None, ...]
    # For each column of the rows, by position: its type's conversion.
    readers: tuple[Callable[[Any], Any] | None, ...]
    row: type[tuple[Any, ...]] | None
    # Whether its columns are known only from its rows (textual SQL), and the columns
    # its rows had last.
    textual: bool = False
    columns_read: tuple[str, ...] = ()

    # The SQL and the source of each argument, for each length of its IN lists (at most
    # FORMS_MAX of them, forgotten together when there would be more).
    forms: dict[tuple[int, ...], _Form] = field(default_factory=dict)

    @functools.cached_property
    def converter_of(self) -> dict[str, Callable[[Any], Any] | None]:
        """Each parameter's conversion, by its name."""
        return dict(zip(self.names, self.converters, strict=True))

    @functools.cached_property
    def in_lists(self) -> tuple[str, ...]:
        """The names of the parameters written out as IN lists, one placeholder an item."""
        compiled = self.compiled
        return tuple(sorted(compiled.bind_names[bind] for bind in compiled.post_compile_params))

    @functools.cached_property
    def has_forms(self) -> bool:
        """Whether where each argument comes from can be found once for values of one
        shape: not with names written otherwise in the SQL, an IN list of tuples, or a
        value computed at each run."""
        compiled = self.compiled
        return not (
            compiled.escaped_bind_names
            or any(bind.callable is not None for bind in compiled.binds.values())
            or any(bind.type._is_tuple_type for bind in compiled.post_compile_params)
        )

    def expanded(self, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        """The SQL and arguments for `values`: an IN list is written out for its items."""
        if not self.has_forms:
            return self._expanded_anew(values)
        shape = tuple(len(values[name]) for name in self.in_lists)
        form = self.forms.get(shape)
        if form is None:
            if len(self.forms) >= FORMS_MAX:
                self.forms.clear()
            form = self.forms[shape] = self._form(values)
        return form.sql, form.arguments(values)

    def arguments(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        if self.compiled.post_compile_params:
            raise ValueError("an IN list is written out for one set of values at a time")
        return self.expanded(values)[1]

    def _form(self, values: Mapping[str, Any]) -> _Form:
        """Where the arguments for values like `values` (the same names, IN lists of the
        same lengths) come from, found by compiling them once as SQLAlchemy does."""
        compiled = self.compiled
        binds = compiled.binds
        named = compiled.construct_params(values, _check=True)
        items: dict[str, tuple[str, int]] = {}
        if compiled.post_compile_params:
            state = compiled.construct_expanded_state(values)
            sql, order, processors = state.statement, state.positiontup or (), state.processors
            for name, placeholders in state.parameter_expansion.items():
                items |= {placeholder: (name, i) for i, placeholder in enumerate(placeholders)}
        else:
            sql, order, processors = self.sql, self.names, {}
        converter_of = self.converter_of
        sources: list[_Source] = []
        for placeholder in order:
            convert = processors.get(placeholder, converter_of.get(placeholder))
            name, item = items.get(placeholder, (placeholder, None))
            # Looked up as SQLAlchemy does: by the parameter's key, else by its name.
            key = binds[name].key
            given = key if key in values else name if name in values else None
            if given is not None:
                sources.append((given, item, None, convert))
            else:
                # A value written into the statement itself: the same at every run.
                constant = named[placeholder]
                converted = constant if convert is None else convert(constant)
                sources.append((None, None, converted, None))
        return _Form(sql, tuple(sources))

    def _expanded_anew(self, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        if not self.compiled.post_compile_params:
            return self.sql, self._arguments_anew(values)
        state = self.compiled.construct_expanded_state(values)
        # The items of an IN list have converters of their own; the rest keep theirs.
        processors = {**self.converter_of, **state.processors}
        names = state.positiontup or ()
        return state.statement, tuple(
            value if (convert := processors.get(name)) is None else convert(value)
            for name, value in zip(names, state.positional_parameters, strict=True)
        )

    def _arguments_anew(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        named = self.compiled.construct_params(values, _check=True)
        return tuple(
            named[name] if convert is None else convert(named[name])
            for name, convert in zip(self.names, self.converters, strict=True)
        )

    def records(self, records: Sequence[Any], attributes: Sequence[Any]) -> list[Any]:
        """The rows of asyncpg's `records`, whose columns are `attributes`."""
        if not attributes:
            return []
        if self.textual:
            self._columns_are(tuple(attribute.name for attribute in attributes))
        return self._read(records)

    def rows(self, cursor: sqlite3.Cursor) -> list[Any]:
        """The rows of SQLite's `cursor`."""
        if cursor.description is None:
            return []
        if self.textual:
            self._columns_are(tuple(column[0] for column in cursor.description))
        return self._read(cursor.fetchall())

    def _columns_are(self, columns: tuple[str, ...]) -> None:
        """Textual SQL without typed columns: its rows are read as the driver gives them,
        with the columns they have now (a table's columns may change under SELECT *)."""
        if columns != self.columns_read:
            self.row, self.readers = _row_type(columns), (None,) * len(columns)
            self.columns_read = columns

    def _read(self, found: Sequence[Sequence[Any]]) -> list[Any]:
        # Typed columns have their row type from the start, textual ones from their rows.
        assert self.row is not None
        readers = self.readers
        make = self.row._make  # type: ignore[attr-defined]
        if not any(readers):
            return [make(values) for values in found]
        return [
            make(
                value if read is None else read(value)
                for read, value in zip(readers, values, strict=True)
            )
            for values in found
        ]


# Where one positional argument comes from: a value by its name (and the item of it, for
# an IN list), or a constant of the statement (with no name); and the conversion of its
# column's type, still to apply.
_Source = tuple[str | None, int | None, Any, Callable[[Any], Any] | None]
FORMS_MAX = 64


@dataclass(frozen=True)
class _Form:
    """A statement's SQL for values of one shape, and the source of each of its
    arguments."""

    sql: str
    sources: tuple[_Source, ...]

    def arguments(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        arguments = []
        for name, item, constant, convert in self.sources:
            if name is None:
                value = constant
            elif item is None:
                value = values[name]
            else:
                value = values[name][item]
            arguments.append(value if convert is None else convert(value))
        return tuple(arguments)


# A statement, and the names of the values it is given.
_Key = tuple[Executable, tuple[str, ...]]
# What each engine prepared, kept while the engine lives. Statements are built once, and
# compare and hash by identity: a few dozen are prepared. One built at each call would be
# prepared at each call too, and is forgotten when the engine has prepared too many.
_PREPARED: weakref.WeakKeyDictionary[Engine, dict[_Key, _Prepared]] = weakref.WeakKeyDictionary()
PREPARED_MAX = 256


def _prepare(
    connection: AsyncConnection, statement: Executable, keys: tuple[str, ...]
) -> _Prepared:
    prepared = _PREPARED.setdefault(connection.sync_engine, {})
    found = prepared.get((statement, keys))
    if found is not None:
        return found
    dialect = connection.dialect
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
    assert isinstance(compiled, SQLCompiler)
    if compiled.literal_execute_params:
        raise ValueError(f"SQL with values written into it cannot run directly: {compiled}")
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise ValueError(f"a column default computed in Python cannot run directly: {compiled}")
    names = tuple(compiled.positiontup or ())
    converters = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    columns = compiled._result_columns
    readers = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
    )
    row = _row_type([column.keyname for column in columns]) if columns else None
    if len(prepared) >= PREPARED_MAX:
        prepared.clear()
    found = prepared[(statement, keys)] = _Prepared(
        str(compiled), compiled, names, converters, readers, row, textual=row is None
    )
    return found


def _row_type(names: Sequence[str]) -> type[tuple[Any, ...]]:
    """Rows read by position, by name as attributes, and as a mapping (`row._mapping`)."""
    base = namedtuple("Row", names, rename=True)  # type: ignore[misc]
    mapping = property(lambda row: dict(zip(names, row, strict=True)))
    return type("Row", (base,), {"__slots__": (), "_mapping": mapping})


class _Answer:
    """A statement's rows, read as from SQLAlchemy's result."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return self._rows

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise (exc.NoResultFound if not self._rows else exc.MultipleResultsFound)(
                f"one row was expected, {len(self._rows)} came"
            )
        return self._rows[0]

    def one_or_none(self) -> Any | None:
        if len(self._rows) > 1:
            raise exc.MultipleResultsFound(f"at most one row was expected, {len(self._rows)} came")
        return self._rows[0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any | None:
        row = self.one_or_none()
        return None if row is None else row[0]


__all__ = ["Rows", "execute"]
