"""psycopg 3 (async): named server-side cursors fetched in batches, and ``COPY`` for writing.

A named cursor is a ``DECLARE``-d cursor on the server: ``FETCH`` brings ``batch_size`` rows
at a time and ``CLOSE`` ends it. It lives in a transaction, which reading opens (a savepoint
if one is already open) and ends with the rows. Rows come as tuples or dicts from psycopg's
own row factories, so they need no conversion.
"""

from __future__ import annotations

import importlib
import itertools
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
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

__all__ = ["PsycopgDriver"]

_cursor_numbers = itertools.count()


class PsycopgDriver(Driver):
    """``psycopg.AsyncConnection`` and ``psycopg_pool.AsyncConnectionPool``."""

    name = "psycopg"
    modules = frozenset({"psycopg", "psycopg_pool"})

    def kind_of(self, target: object) -> Kind | None:
        """See `Driver.kind_of`."""
        psycopg: Any = sys.modules.get("psycopg")
        if psycopg is not None and isinstance(target, psycopg.AsyncConnection):
            return "connection"
        pool: Any = sys.modules.get("psycopg_pool")
        if pool is not None and isinstance(target, pool.AsyncConnectionPool):
            return "pool"
        return None

    def acquire(self, pool: Any) -> AbstractAsyncContextManager[Any]:
        """See `Driver.acquire`."""
        acquired: AbstractAsyncContextManager[Any] = pool.connection()
        return acquired

    def is_lost(self, connection: Any) -> bool:
        """See `Driver.is_lost`."""
        return bool(connection.broken or connection.closed)

    async def read(
        self, connection: Any, sql: str, params: Params, *, batch_size: int, row: RowType
    ) -> AsyncGenerator[list[Any], None]:
        """See `Driver.read`: ``FETCH batch_size`` from a named cursor until a short batch."""
        rows: Any = importlib.import_module("psycopg.rows")
        factory = rows.tuple_row if row == "tuple" else rows.dict_row
        name = f"aiomr_cursor_{next(_cursor_numbers)}"
        async with (
            first_error_wins(connection.transaction()),
            first_error_wins(connection.cursor(name, row_factory=factory)) as cursor,
        ):
            cursor.itersize = batch_size
            await cursor.execute(sql, params or None)
            while True:
                batch = await cursor.fetchmany(batch_size)
                if not batch:
                    return
                yield batch
                if len(batch) < batch_size:
                    return

    def restrict(
        self, connection: Any, sql: str, params: Params, column: str, bounds: Bounds
    ) -> tuple[str, Params]:
        """See `Driver.restrict`: the bounds are written into the query as SQL literals.

        Literals rather than parameters leave the caller's query text untouched: with no
        parameters of its own, a ``%`` in it stays a ``%``.
        """
        literal: Any = importlib.import_module("psycopg.sql").Literal

        def mark(value: Any) -> str:
            text: str = literal(value).as_string(connection)
            return text

        return range_query(sql, column, bounds, mark), params

    async def write(
        self, connection: Any, table: Table, rows: AsyncIterator[Sequence[Any]], batch_size: int
    ) -> None:
        """See `Driver.write`: ``COPY ... FROM STDIN``, one row at a time into its buffer."""
        columns = ", ".join(map(quote_identifier, table.columns))
        statement = f"COPY {table.qualified()} ({columns}) FROM STDIN"
        async with (
            first_error_wins(connection.transaction()),
            first_error_wins(connection.cursor()) as cursor,
            first_error_wins(cursor.copy(statement)) as copy,
        ):
            async for values in rows:
                await copy.write_row(values)
