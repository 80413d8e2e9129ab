"""asyncpg: server-side cursors fetched in batches, and ``COPY`` for writing.

asyncpg creates cursors only inside a transaction, so reading opens one (a savepoint if the
caller's connection is already in one) and ends it when the rows end. Its ``Record`` does not
pickle, so every row becomes a tuple or a dict before it travels to a worker.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from ._db_driver import Bounds, Driver, Kind, Params, RowType, Table, first_error_wins, range_query

__all__ = ["AsyncpgDriver"]


class AsyncpgDriver(Driver):
    """Connections, pool connections and pools of asyncpg."""

    name = "asyncpg"
    modules = frozenset({"asyncpg"})

    def kind_of(self, target: object) -> Kind | None:
        """See `Driver.kind_of`."""
        asyncpg: Any = sys.modules["asyncpg"]
        if isinstance(target, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy):
            return "connection"
        if isinstance(target, asyncpg.Pool):
            return "pool"
        return None

    def acquire(self, pool: Any) -> AbstractAsyncContextManager[Any]:
        """See `Driver.acquire`."""
        acquired: AbstractAsyncContextManager[Any] = pool.acquire()
        return acquired

    def is_lost(self, connection: Any) -> bool:
        """See `Driver.is_lost`.

        A pool detaches a connection from its proxy as soon as the connection closes, and
        the proxy then refuses every call: to the borrower, that too is a lost connection.
        """
        asyncpg: Any = sys.modules["asyncpg"]
        try:
            return bool(connection.is_closed())
        except asyncpg.InterfaceError:
            return True

    def check_params(self, params: Params) -> None:
        """asyncpg takes positional parameters only (``$1``, ``$2``...)."""
        if not isinstance(params, tuple):
            raise TypeError("asyncpg takes positional parameters ($1, $2, ...), not a mapping")

    async def read(
        self, connection: Any, sql: str, params: Params, *, batch_size: int, row: RowType
    ) -> AsyncGenerator[list[Any], None]:
        """See `Driver.read`: ``cursor.fetch(batch_size)`` until a short batch."""
        assert isinstance(params, tuple)
        async with first_error_wins(connection.transaction()):
            cursor = await connection.cursor(sql, *params)
            convert: Callable[[list[Any]], list[Any]] | None = None
            while True:
                records = await cursor.fetch(batch_size)
                if not records:
                    return
                if convert is None:
                    convert = _converter(records[0], row)
                rows = convert(records)
                last = len(records) < batch_size
                # Drop the records before handing the rows out: kept alive across the yield
                # they outlive the garbage collector's young generations, and every batch
                # promoted to the oldest one brings a full collection closer.
                del records
                yield rows
                if last:
                    return

    def restrict(
        self, connection: Any, sql: str, params: Params, column: str, bounds: Bounds
    ) -> tuple[str, Params]:
        """See `Driver.restrict`: the bounds become parameters after the caller's own."""
        assert isinstance(params, tuple)
        added: list[Any] = []

        def mark(value: Any) -> str:
            added.append(value)
            return f"${len(params) + len(added)}"

        text = range_query(sql, column, bounds, mark)
        return text, (*params, *added)

    async def write(
        self, connection: Any, table: Table, rows: AsyncIterator[Sequence[Any]], batch_size: int
    ) -> None:
        """See `Driver.write`: one binary ``COPY`` fed from the rows as they come."""
        async with first_error_wins(connection.transaction()):
            await connection.copy_records_to_table(
                table.name, records=rows, columns=list(table.columns), schema_name=table.schema
            )


def _converter(first: Any, row: RowType) -> Callable[[list[Any]], list[Any]]:
    """Return the fastest conversion of a batch of ``Record``s like ``first`` to ``row``s."""
    if row == "dict":
        names = list(first.keys())
        return lambda records: [dict(zip(names, r, strict=True)) for r in records]
    if len(first) < 2:
        return lambda records: list(map(tuple, records))
    # itemgetter(0, 1, ...) indexes the record from C and builds the tuple at once, about a
    # third faster than tuple(record), which goes through the record's iterator.
    getter = operator.itemgetter(*range(len(first)))
    return lambda records: list(map(getter, records))
