"""asyncpg: server-side cursors fetched in batches, ``COPY`` text for the workers to decode,
and ``COPY`` for writing.

asyncpg creates cursors only inside a transaction, so reading opens one (a savepoint if the
caller's connection is already in one) and ends it when the rows end. Its ``Record`` does not
pickle, so every row becomes a tuple or a dict before it travels to a worker.

With ``transfer="copy"`` the query runs as ``COPY (query) TO STDOUT`` instead (one statement,
no transaction needed): asyncpg pushes the blocks it receives into a callback, which puts them
in a small queue; the reading generator takes them out, so when the job stops taking rows the
callback waits, asyncpg stops reading the socket and the server waits in turn.
"""

from __future__ import annotations

import asyncio
import operator
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from .cleanup import first_error_wins, retrieve
from .copy_text import CopyLayout, CopyRows, unsupported_columns
from .driver import Bounds, Driver, Kind, Params, RowType, Table, range_query

__all__ = ["COPY_QUEUE", "AsyncpgDriver"]

COPY_QUEUE = 4
"""Blocks of ``COPY`` text received ahead of the job (asyncpg hands over what one read of the
socket brought: up to a few hundred KiB); more would only hold memory."""


class AsyncpgDriver(Driver):
    """Connections, pool connections and pools of asyncpg."""

    name = "asyncpg"
    modules = frozenset({"asyncpg"})
    copies = True

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

    async def read_copy(
        self, connection: Any, sql: str, params: Params, *, row: RowType
    ) -> AsyncGenerator[Any, None]:
        """See `Driver.read_copy`: ``copy_from_query`` on a task feeding a bounded queue.

        Closing the generator stops the copy (see `_CopyFeed.stop`), which asyncpg ends by
        asking the server to cancel the statement; the generator returns once the task has
        ended, and the connection is ready for its next query.
        """
        assert isinstance(params, tuple)
        layout = await _copy_layout(connection, sql, row)
        feed = _CopyFeed(connection, sql, params)
        first = 0
        try:
            while (block := await feed.blocks.get()) is not None:
                if isinstance(block, BaseException):
                    raise block
                count = block.count(b"\n")
                yield CopyRows(layout, [block], count, first)
                first += count
        finally:
            await feed.stop()

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


class _Stopped(Exception):
    """Raised by the output callback of a copy whose reader has gone."""


class _CopyFeed:
    """``copy_from_query`` on a task of its own, handing its blocks over through a queue.

    Stopping it must not break the connection. asyncpg aborts a copy cleanly (it asks the
    server to cancel the statement and skips the rest) when its output callback fails, or
    when the wait for the server's next data is cancelled. But a task cancelled just after
    that data has arrived, before it has resumed to pass it on, leaves asyncpg with data and
    nobody waiting for it: it then fails inside its protocol and closes the connection
    ("'NoneType' object has no attribute 'cancelled'", asyncpg issue #240). So the task is
    cancelled only where that cannot happen: inside the callback, or after the server has
    sent nothing for `STOP_GRACE` seconds. Otherwise the callback itself raises, the next
    time asyncpg calls it.
    """

    STOP_GRACE = 0.25
    """Seconds to let a stopped copy reach its callback before its wait is cancelled."""

    def __init__(self, connection: Any, sql: str, params: tuple[Any, ...]) -> None:
        self.blocks: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(COPY_QUEUE)
        self._stopping = False
        self._in_output = False
        self._task = asyncio.ensure_future(self._run(connection, sql, params))

    async def _output(self, block: bytes) -> None:
        if self._stopping:
            raise _Stopped
        self._in_output = True
        try:
            await self.blocks.put(block)
        finally:
            self._in_output = False

    async def _run(self, connection: Any, sql: str, params: tuple[Any, ...]) -> None:
        end: BaseException | None = None
        try:
            await connection.copy_from_query(sql, *params, output=self._output)
        except _Stopped:
            return
        except Exception as exc:
            end = exc
        if not self._stopping:  # nobody takes from the queue any more once stopping
            await self.blocks.put(end)

    async def stop(self) -> None:
        """End the copy, whatever it is doing, and wait until its task has ended."""
        self._stopping = True
        while not self.blocks.empty():  # frees a put the task may be waiting in
            self.blocks.get_nowait()
        if self._task.done():
            return
        if self._in_output:
            self._task.cancel()
        await asyncio.wait([self._task], timeout=self.STOP_GRACE)
        if not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])
        retrieve(self._task)  # its error, if any, was in the queue


async def _copy_layout(connection: Any, sql: str, row: RowType) -> CopyLayout:
    """Describe the query's columns; raise if ``COPY`` text cannot give their exact values."""
    statement = await connection.prepare(sql)
    attributes = statement.get_attributes()
    columns = [(a.name, a.type.name, a.type.schema) for a in attributes]
    if not columns:
        raise ValueError("transfer='copy' needs a query that returns at least one column")
    unsupported = unsupported_columns(columns)
    if unsupported:
        raise TypeError(
            f"transfer='copy' cannot decode the column(s) {', '.join(unsupported)} from COPY "
            f"text; cast them in the query (to text, say) or use transfer='rows'"
        )
    types = {type_ for _, type_, _ in columns}
    settings = await connection.fetchrow(
        "SELECT current_setting('DateStyle'), current_setting('bytea_output'),"
        " current_setting('extra_float_digits')::int"
    )
    date_style, bytea_output, float_digits = settings[0], settings[1], settings[2]
    wrong = []
    if types & {"date", "timestamp", "timestamptz"} and not date_style.startswith("ISO"):
        wrong.append(f"DateStyle is {date_style!r}, not ISO")
    if "bytea" in types and bytea_output != "hex":
        wrong.append(f"bytea_output is {bytea_output!r}, not 'hex'")
    if types & {"float4", "float8"} and float_digits < 1:
        wrong.append(f"extra_float_digits is {float_digits}, so floats would be rounded")
    if wrong:
        raise ValueError(
            f"transfer='copy' reads values as the server writes them, and here {'; '.join(wrong)}"
            f": change the session setting or use transfer='rows'"
        )
    names = tuple(name for name, _, _ in columns)
    return CopyLayout(names, tuple(type_ for _, type_, _ in columns), row)


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
