"""SQLAlchemy (asyncio): ``AsyncConnection.stream()`` with ``yield_per``, executemany inserts.

Streaming asks the dialect for a server-side cursor (asyncpg and psycopg dialects have one;
aiosqlite's fetches in batches) inside a transaction that reading begins (a savepoint if the
connection is already in one) and ends with the rows. SQL text takes named parameters
(``:name``), so parameters come as one mapping.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from .cleanup import first_error_wins
from .driver import Bounds, Driver, Kind, Params, RowType, Table, range_query

__all__ = ["SqlAlchemyDriver"]


class SqlAlchemyDriver(Driver):
    """``AsyncConnection`` and ``AsyncEngine`` of ``sqlalchemy.ext.asyncio``."""

    name = "SQLAlchemy"
    modules = frozenset({"sqlalchemy"})

    def kind_of(self, target: object) -> Kind | None:
        """See `Driver.kind_of`."""
        extension: Any = sys.modules.get("sqlalchemy.ext.asyncio")
        if extension is None:
            return None
        if isinstance(target, extension.AsyncConnection):
            return "connection"
        if isinstance(target, extension.AsyncEngine):
            return "pool"
        return None

    def acquire(self, pool: Any) -> AbstractAsyncContextManager[Any]:
        """See `Driver.acquire`: a connection from the engine's pool."""
        connection: AbstractAsyncContextManager[Any] = pool.connect()
        return connection

    def is_lost(self, connection: Any) -> bool:
        """See `Driver.is_lost`."""
        return bool(connection.closed or connection.invalidated)

    def check_params(self, params: Params) -> None:
        """SQLAlchemy's SQL text takes named parameters (``:name``) from one mapping."""
        if isinstance(params, tuple) and params:
            raise TypeError("SQLAlchemy takes named parameters (:name): pass one mapping")

    async def read(
        self, connection: Any, sql: str, params: Params, *, batch_size: int, row: RowType
    ) -> AsyncGenerator[list[Any], None]:
        """See `Driver.read`: ``stream()`` with ``yield_per=batch_size``, by partitions."""
        sqlalchemy: Any = importlib.import_module("sqlalchemy")
        statement = sqlalchemy.text(sql).execution_options(yield_per=batch_size)
        async with first_error_wins(_transaction(connection)):
            result = await connection.stream(statement, dict(params) or None)
            async with first_error_wins(_closing(result)):
                names = list(result.keys())
                async for batch in result.partitions(batch_size):
                    if row == "tuple":
                        yield list(map(tuple, batch))
                    else:
                        yield [dict(zip(names, values, strict=True)) for values in batch]

    def restrict(
        self, connection: Any, sql: str, params: Params, column: str, bounds: Bounds
    ) -> tuple[str, Params]:
        """See `Driver.restrict`: bounds become named parameters ``:aiomr_bound_N``."""
        named: dict[str, Any] = dict(params)
        added = 0

        def mark(value: Any) -> str:
            nonlocal added
            added += 1
            named[f"aiomr_bound_{added}"] = value
            return f":aiomr_bound_{added}"

        return range_query(sql, column, bounds, mark), named

    async def write(
        self, connection: Any, table: Table, rows: AsyncIterator[Sequence[Any]], batch_size: int
    ) -> None:
        """See `Driver.write`: an ``INSERT`` executed for ``batch_size`` rows at a time."""
        sqlalchemy: Any = importlib.import_module("sqlalchemy")
        columns = [sqlalchemy.column(name) for name in table.columns]
        statement = sqlalchemy.insert(sqlalchemy.table(table.name, *columns, schema=table.schema))
        async with first_error_wins(_transaction(connection)):
            batch: list[dict[str, Any]] = []
            async for values in rows:
                batch.append(dict(zip(table.columns, values, strict=True)))
                if len(batch) >= batch_size:
                    await connection.execute(statement, batch)
                    batch = []
            if batch:
                await connection.execute(statement, batch)


def _transaction(connection: Any) -> AbstractAsyncContextManager[Any]:
    nested = connection.in_transaction()
    begun: AbstractAsyncContextManager[Any] = (
        connection.begin_nested() if nested else connection.begin()
    )
    return begun


@asynccontextmanager
async def _closing(result: Any) -> AsyncIterator[Any]:
    try:
        yield result
    finally:
        await result.close()
