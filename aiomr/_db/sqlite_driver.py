"""aiosqlite: ``fetchmany`` in batches, and ``executemany`` in one transaction for writing.

aiosqlite runs SQLite on a thread of its own per connection, so a batch costs one thread hop
whatever its size. A read needs no transaction: closing the cursor resets its statement and
releases SQLite's read lock.
"""

from __future__ import annotations

import datetime
import decimal
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from .cleanup import first_error_wins
from .driver import (
    Bounds,
    Driver,
    Kind,
    Params,
    RowType,
    Table,
    quote_identifier,
    range_query,
)

__all__ = ["SqliteDriver"]


class SqliteDriver(Driver):
    """``aiosqlite.Connection``."""

    name = "aiosqlite"
    modules = frozenset({"aiosqlite"})

    def kind_of(self, target: object) -> Kind | None:
        """See `Driver.kind_of`."""
        aiosqlite: Any = sys.modules["aiosqlite"]
        return "connection" if isinstance(target, aiosqlite.Connection) else None

    def acquire(self, pool: Any) -> AbstractAsyncContextManager[Any]:
        """aiosqlite has no pools: the connection is used as it is."""
        return nullcontext(pool)

    async def read(
        self, connection: Any, sql: str, params: Params, *, batch_size: int, row: RowType
    ) -> AsyncGenerator[list[Any], None]:
        """See `Driver.read`: ``fetchmany(batch_size)`` until a short batch."""
        cursor = await connection.execute(sql, params)
        async with first_error_wins(cursor):
            names = [column[0] for column in cursor.description or ()]
            while True:
                batch = await cursor.fetchmany(batch_size)
                if not batch:
                    return
                if row == "dict":
                    yield [dict(zip(names, values, strict=True)) for values in batch]
                elif type(batch[0]) is tuple:
                    yield batch
                else:  # a row_factory such as sqlite3.Row, which does not pickle
                    yield list(map(tuple, batch))
                if len(batch) < batch_size:
                    return

    def restrict(
        self, connection: Any, sql: str, params: Params, column: str, bounds: Bounds
    ) -> tuple[str, Params]:
        """See `Driver.restrict`: bounds are parameters, ``?`` or ``:aiomr_bound_N``.

        Dates and datetimes are compared as ISO 8601 text (``2024-05-01``,
        ``2024-05-01 12:00:00``), the way SQLite stores them; decimals as floats.
        """
        added: list[Any] = []

        def mark(value: Any) -> str:
            added.append(_sqlite_value(value))
            return "?" if isinstance(params, tuple) else f":aiomr_bound_{len(added)}"

        text = range_query(sql, column, bounds, mark)
        if isinstance(params, tuple):
            return text, (*params, *added)
        named = {f"aiomr_bound_{i}": value for i, value in enumerate(added, 1)}
        return text, {**params, **named}

    async def write(
        self, connection: Any, table: Table, rows: AsyncIterator[Sequence[Any]], batch_size: int
    ) -> None:
        """See `Driver.write`: ``executemany`` per ``batch_size`` rows."""
        marks = ", ".join("?" * len(table.columns))
        columns = ", ".join(map(quote_identifier, table.columns))
        statement = f"INSERT INTO {table.qualified()} ({columns}) VALUES ({marks})"
        async with first_error_wins(_transaction(connection)):
            batch: list[Sequence[Any]] = []
            async for values in rows:
                batch.append(values)
                if len(batch) >= batch_size:
                    await connection.executemany(statement, batch)
                    batch = []
            if batch:
                await connection.executemany(statement, batch)


@asynccontextmanager
async def _transaction(connection: Any) -> AsyncIterator[None]:
    """A transaction, or a savepoint inside the caller's open one."""
    nested = connection.in_transaction
    await connection.execute("SAVEPOINT aiomr_write" if nested else "BEGIN")
    try:
        yield
    except BaseException:
        if nested:
            await connection.execute("ROLLBACK TO aiomr_write")
            await connection.execute("RELEASE aiomr_write")
        else:
            await connection.rollback()
        raise
    if nested:
        await connection.execute("RELEASE aiomr_write")
    else:
        await connection.commit()


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat(" ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value
